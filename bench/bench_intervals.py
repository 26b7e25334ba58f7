"""What the intervals cost: an evaluation of N real against N synthetic images (default 1,000 each,
breast-phantom ROIs 64x64, fidelity + distribution groups with the default domain features), and
the bootstrap intervals of FID, KID and precision/recall/density/coverage on features of that
evaluation's shape (N x 128, 1,000 resamples). The issue's target: intervals add at most 10 % to
the evaluation's time, i.e. (evaluate + intervals) / evaluate <= 1.10. One JSON line.

``--n=N`` changes the number of images, ``--resamples=R`` the resamples.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from common import arg, figure, pick

N = arg("n", pick(1000, 200))
RESAMPLES = arg("resamples", pick(1000, 200))


def main() -> None:
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.evaluation.evaluate import evaluate
    from medgen.metrics.feature_intervals import feature_metric_intervals

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "phantom"
        # half train, half test: N real (test) against N others of the same kind (train) as the "synthetic" set
        prepare("builtin:breast-phantom", data, PrepareOptions(size=(64, 64), workers=1, split=(0.5, 0.0, 0.5),
                                                                source=SourceOptions(n=2 * N)))
        t = time.perf_counter()
        evaluate(real=f"{data}@test", fake=f"{data}@train", metrics="fidelity,distribution", out=Path(tmp) / "ev",
                 echo=lambda *a, **k: None)
        t_eval = time.perf_counter() - t
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(N, 128)), rng.normal(size=(N, 128)) + 0.1
    t = time.perf_counter()
    feature_metric_intervals(real, fake, n_resamples=RESAMPLES)  # the six metrics from one bootstrap
    t_int = time.perf_counter() - t
    figure("intervals", f"FID/KID/PRDC intervals ({RESAMPLES} resamples) on an evaluation of {N} vs {N} images",
           "s", round(t_eval + t_int, 2), round(t_eval, 2), "the same evaluation without intervals",
           ratio=round((t_eval + t_int) / t_eval, 3), target="<= 1.10", seconds_intervals=round(t_int, 2))


if __name__ == "__main__":
    main()
