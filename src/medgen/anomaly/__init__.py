"""Unsupervised anomaly detection: train on normal images, score and localise anomalies (S003).

- :mod:`medgen.anomaly.scoring`: per-pixel anomaly maps (abs, SSIM, combined), smoothing,
  foreground, per-image scores;
- :mod:`medgen.anomaly.thresholds`: thresholds at a target false-positive rate on normal data;
- :mod:`medgen.anomaly.evaluation`: image/pixel AUROC, AUPRC, Dice;
- :mod:`medgen.anomaly.diffusion`: AnoDDPM-style partial-noise reconstruction for pixel DDPMs;
- :mod:`medgen.anomaly.detectors`: the detector registry (one module per detector);
- :mod:`medgen.anomaly.features`: patch features, coreset and nearest neighbours for PatchCore/PaDiM;
- :func:`detect`: all of it for a trained run (``medgen detect``).
"""
from __future__ import annotations

from medgen.anomaly.detect import detect  # noqa: E402  (the function, not the submodule; light to import)

__all__ = ["detect"]
