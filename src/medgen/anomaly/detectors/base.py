"""What every detector is: built from a loaded model and the settings, optionally fitted on the
run's NORMAL training images, then asked for raw per-pixel maps (before smoothing and the
foreground mask, which ``detect`` applies alike to every detector)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from medgen.anomaly.tuning import Scoring


@dataclass
class Settings:
    map: str = "abs"               # reconstruction detectors: abs | ssim | combined
    ssim_window: int = 7
    noise_levels: tuple[float, ...] = (0.1,)  # diffusion: fractions of the training timesteps, maps averaged
    steps: int | None = 10
    sampler: str = "ddim"
    draws: int = 8
    patch: float | None = None     # diffusion: patch-wise reconstruction, patch side as a fraction of the image side
    memory: int = 2048             # patchcore: patches kept in the memory bank (greedy coreset)
    neighbours: int = 1            # patchcore: distance to the k-th nearest memory patch (mean of the k)
    batch_size: int = 16
    seed: int = 0


@dataclass
class Output:
    maps: np.ndarray                   # (N, 1, *spatial) float32, higher = more anomalous
    reconstructions: np.ndarray | None  # (N, C, *spatial) for the figure, when the detector reconstructs


class Detector:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""            # one line for --help and the docs
    fits_on_normals: ClassVar[bool] = False  # fit() needs the run's normal training images
    # whether ``--tune auto`` chooses the image scoring on normals with synthetic lesions: for maps whose
    # scale says nothing about a sensible smoothing or top-percent (feature distances, probabilities)
    tunes_by_default: ClassVar[bool] = False
    # the image scoring used where the caller gives none: error maps are noisy pixel by pixel, so
    # smooth 3 px and average the top 5 % (chosen on brain-lesions' validation split)
    scoring: ClassVar[Scoring] = Scoring(smooth=3.0, score="top-percentile", top_percent=5.0, edge_margin=0.0)

    def __init__(self, model, settings: Settings):
        self.model = model
        self.settings = settings

    def fit(self, normals: np.ndarray, echo=print) -> None:
        """Learn from normal training images (N, C, *spatial); nothing for reconstruction detectors."""

    def run(self, images: np.ndarray, seed: int, describe: str) -> Output:
        raise NotImplementedError

    def record(self) -> dict:
        """The settings that shaped the maps, for metrics.json."""
        return {}

    def headline(self) -> str:
        """One line for the terminal: what this detector does with this model."""
        return self.name


def batches(model, images: np.ndarray, batch_size: int, describe: str, fn):
    """``fn(tensor batch)`` over ``images`` on the model's device with a progress bar; outputs concatenated."""
    import torch

    from medgen.progress import progress_bar

    out = []
    with progress_bar(describe, len(images)) as advance, torch.no_grad():
        for start in range(0, len(images), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(model.device)
            out.append(fn(xb).float().cpu().numpy())
            advance(len(xb))
    return np.concatenate(out)
