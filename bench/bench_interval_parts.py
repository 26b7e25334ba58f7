"""Where the interval time goes: process CPU time of fid_ci, kid_ci and prdc_ci on the features an
evaluation stored (``EVALUATION/features/*.npz``, e.g. ``medgen evaluate --real DATA@test --fake
DATA@train --out EV``), once with 1 resample (what is computed once) and once with R (default
1,000). One JSON line per extractor and metric.

    python bench_interval_parts.py --features=EV [--resamples=R]
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common import arg, emit


def main() -> None:
    from medgen.metrics.feature_intervals import fid_ci, kid_ci, prdc_ci

    folder, resamples = Path(arg("features", "evaluation")) / "features", arg("resamples", 1000)
    warm = np.random.default_rng(0).normal(size=(30, 8))
    for fn in (fid_ci, kid_ci, prdc_ci):
        fn(warm, warm, n_resamples=2)  # imports and first calls are not the intervals' cost
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as z:
            x, y = z["real"].astype(np.float64), z["generated"].astype(np.float64)
        for name, fn in (("fid", fid_ci), ("kid", kid_ci), ("prdc", prdc_ci)):
            cpu = []
            for r in (1, resamples):
                t = time.process_time()
                fn(x, y, n_resamples=r)
                cpu.append(time.process_time() - t)
            emit("interval_parts", {"extractor": path.stem, "n": [len(x), len(y)], "dim": int(x.shape[1]), "metric": name,
                                    "cpu_s_once": round(cpu[0], 3), "cpu_s": round(cpu[1], 3), "resamples": resamples})


if __name__ == "__main__":
    main()
