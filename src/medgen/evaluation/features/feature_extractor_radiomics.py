"""``radiomics[:whole|foreground]``: pyradiomics first-order + GLCM + GLRLM + GLSZM features per
image (whole-image mask by default, or the foreground > 5 % of the image's range). Features are
z-scored with the real set's statistics before any metric; their Fréchet distance is the FRD.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medgen.errors import UserError
from medgen.evaluation.features.base import FeatureExtractor

USAGE = "radiomics[:foreground]"


def build(arg: str | None, **_: Any) -> "RadiomicsExtractor":
    return RadiomicsExtractor(mask=arg or "whole")


RADIOMICS_CLASSES = ("firstorder", "glcm", "glrlm", "glszm")


def _radiomics_one(args) -> dict:
    img, settings, classes, mask_mode = args
    import logging

    import SimpleITK as sitk
    import radiomics
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    ext = _RADIOMICS_CACHE.get((tuple(sorted(settings.items())), classes))
    if ext is None:
        ext = featureextractor.RadiomicsFeatureExtractor(**settings)
        ext.disableAllFeatures()
        for c in classes:
            ext.enableFeatureClassByName(c)
        _RADIOMICS_CACHE[(tuple(sorted(settings.items())), classes)] = ext
    vol = img.astype(np.float64)
    # A one-pixel border outside the mask: pyradiomics refuses a mask that covers everything.
    if vol.ndim == 2:  # (1, H, W): force2D takes the one slice along the first axis
        vol = vol[None]
        pad = ((0, 0), (1, 1), (1, 1))
        inner = (slice(None), slice(1, -1), slice(1, -1))
    else:
        pad = 1
        inner = (slice(1, -1),) * 3
    padded = np.pad(vol, pad, mode="edge")
    mask = np.zeros(padded.shape, dtype=np.uint8)
    if mask_mode == "foreground":
        lo, hi = float(vol.min()), float(vol.max())
        fg = vol > lo + 0.05 * (hi - lo)
        if fg.sum() < 16:  # nothing (or almost nothing) above background: use the whole image
            fg = np.ones_like(fg)
        mask[inner] = fg
    else:
        mask[inner] = 1
    result = ext.execute(sitk.GetImageFromArray(padded), sitk.GetImageFromArray(mask))
    return {k: float(v) for k, v in result.items() if k.startswith("original_")}


_RADIOMICS_CACHE: dict = {}


class RadiomicsExtractor(FeatureExtractor):
    """pyradiomics first-order + texture features (FRD when fed to the Fréchet distance).

    Intensities are discretised with a fixed bin width over [0, 1] (``bin_width``, 1/64 by default:
    fixed widths keep texture features comparable between images, unlike a per-image bin count).
    2-D images use pyradiomics' ``force2D``; volumes are analysed in 3-D. A whole-image mask by
    default (``mask="foreground"``: pixels above 5 % of the image's range). Images are processed in
    ``workers`` processes (default: 1 below 64 images, else up to 4).
    """

    name = "radiomics"
    standardise = True

    def __init__(self, mask: str = "whole", bin_width: float = 1.0 / 64, classes: Sequence[str] = RADIOMICS_CLASSES,
                 workers: int | None = None):
        try:
            import radiomics  # noqa: F401
        except ImportError:
            raise UserError("the 'radiomics' feature extractor needs pyradiomics: "
                            "pip install --no-build-isolation pyradiomics==3.0.1 (after numpy, setuptools, wheel)") from None
        if mask not in ("whole", "foreground"):
            raise UserError(f"radiomics mask must be 'whole' or 'foreground', got '{mask}' (use --features radiomics:foreground)")
        self.mask = mask
        self.bin_width = float(bin_width)
        self.classes = tuple(classes)
        self.workers = workers
        self.feature_names: list[str] = []
        self.preprocessing = (f"pyradiomics {', '.join(self.classes)} features, {mask} mask, fixed bin width {self.bin_width:g} "
                              "on [0, 1] intensities, force2D for 2-D images; z-scored with the real set's statistics")

    def _settings(self, spatial_dims: int) -> dict:
        return {"binWidth": self.bin_width, "force2D": spatial_dims == 2, "force2Ddimension": 0, "label": 1,
                "additionalInfo": False, "preCrop": True}

    def __call__(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim not in (4, 5):
            raise ValueError(f"expected images (N, C, H, W) or (N, C, D, H, W), got shape {images.shape}")
        spatial_dims = images.ndim - 2
        grey = images.mean(axis=1) if images.shape[1] > 1 else images[:, 0]
        settings = self._settings(spatial_dims)
        jobs = [(g, settings, self.classes, self.mask) for g in grey]
        workers = self.workers if self.workers is not None else (1 if len(jobs) < 64 else 4)
        import os

        from medgen.parallel import process_map

        workers = max(1, min(workers, os.cpu_count() or 1))
        rows = list(process_map(_radiomics_one, jobs, workers, min_items=2))
        names = sorted(rows[0]) if rows else []
        if self.feature_names and names != self.feature_names:
            raise AssertionError("radiomics feature names changed between calls")
        self.feature_names = names
        self.dim = len(names)
        return np.array([[r.get(n, np.nan) for n in names] for r in rows], dtype=np.float64).reshape(len(rows), len(names))

    def describe(self) -> dict:
        import radiomics

        return {**super().describe(), "pyradiomics": radiomics.__version__, "classes": list(self.classes),
                "mask": self.mask, "bin_width": self.bin_width, "n_features": self.dim}
