"""What the intervals cost: ``medgen evaluate`` of N real against N other images (default 1,000 each,
breast-phantom ROIs 64x64, fidelity + distribution groups, default features) with the default 1,000
bootstrap resamples against the same evaluation with ``n_resamples=0``. The issue's target: at most
+10 %, i.e. with / without <= 1.10. The domain extractor is trained once first (cached), so both
timed evaluations reuse it. One JSON line.

``--n=N`` changes the number of images, ``--resamples=R`` the resamples.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import arg, figure, pick

N = arg("n", pick(1000, 200))
RESAMPLES = arg("resamples", 1000)


def main() -> None:
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.evaluation import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "phantom"
        # half train, half test: N real (test) against N others of the same kind (train) as the "synthetic" set
        prepare("builtin:breast-phantom", data, PrepareOptions(size=(64, 64), workers=1, split=(0.5, 0.0, 0.5),
                                                                source=SourceOptions(n=2 * N)))

        def run(resamples: int) -> float:
            t = time.perf_counter()
            evaluate(real=f"{data}@test", fake=f"{data}@train", metrics="fidelity,distribution", out=Path(tmp) / "ev",
                     n_resamples=resamples, echo=lambda *a, **k: None)
            return time.perf_counter() - t

        run(0)  # trains and caches the domain extractor
        without, with_ci = run(0), run(RESAMPLES)
    figure("intervals", f"evaluate of {N} vs {N} images with FID/KID/PRDC intervals ({RESAMPLES} resamples)",
           "s", round(with_ci, 2), round(without, 2), "the same evaluation with n_resamples=0",
           ratio=round(with_ci / without, 3), target="<= 1.10")


if __name__ == "__main__":
    main()
