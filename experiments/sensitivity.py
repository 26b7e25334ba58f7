"""Does an extractor see blur and lost contrast? The sensitivity check of docs/evaluation.md, per extractor.

    python experiments/sensitivity.py breast-phantom 1200     # built-in source, number of images

Prepares the built-in source at 64x64 (60/10/30 % split), trains the domain extractor on the
training split, then runs :func:`medgen.metrics.sensitivity_check` on the test split with the
domain and texture features (300 resamples) and prints one line per extractor.
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medgen.data.dataset import PreparedDataset
from medgen.data.prepare import PrepareOptions, prepare
from medgen.data.sources import SourceOptions
from medgen.evaluation.domain import build_domain_extractor
from medgen.evaluation.features import standardise
from medgen.metrics.sensitivity import sensitivity_check
from medgen.metrics.texture import texture_features


def main(source: str, n: int) -> None:
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    prepare(f"builtin:{source}", tmp / "d", PrepareOptions(size=(64, 64), workers=1, split=(0.6, 0.1, 0.3), source=SourceOptions(n=n)))
    ds = PreparedDataset(tmp / "d")
    tr, te = ds.select("train"), ds.select("test")
    domain = build_domain_extractor(np.asarray(ds.images[tr]), ds.label_ids(tr), tmp / "cache", label_names=ds.labels, echo=lambda *a: None)
    for name, extract, std in (("domain", domain, None), ("texture", texture_features, standardise)):
        t = time.time()
        r = sensitivity_check(np.asarray(ds.images[te]), extract, n_resamples=300, standardise=std)
        show = {k: "%.4g [%.4g, %.4g]" % (r[k]["value"], r[k]["low"], r[k]["high"]) for k in ("real_vs_real", "real_vs_degraded")}
        print(name, show, "detects", r["detects_defect"], "ratio %.3g" % r["ratio"], "n/half", r["n_per_half"], "%.0f s" % (time.time() - t))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
