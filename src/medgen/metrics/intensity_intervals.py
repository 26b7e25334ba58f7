"""Bootstrap intervals of the pooled-intensity comparison (KS, 1-Wasserstein, MSE over all pairs),
resampling whole images, not pixels.

Pixels of one image are strongly correlated, so the unit that varies from one draw of a data set to
the next is the image: each resample draws the real and the generated images (independently, with
replacement) and recomputes the three numbers on the pooled pixels of the drawn images.

Nothing is recomputed from pixels per resample:

* KS and Wasserstein: every image's histogram (``bins`` bins over the value range) is counted once;
  a resample's pooled histogram is then one matrix product (draw counts x histograms), its CDF a
  cumulative sum, KS the largest CDF difference and W1 the area between the CDFs (pixels at their
  bin centres). The reported values stay those of :func:`medgen.metrics.compare_intensities`; the
  binned statistic of the whole sets gives the bootstrap's centre, so the interval is the binned
  one moved onto the reported value (at 1,024 bins over [0, 1], the binned and the exact statistic
  differ by about one bin's mass or width).
* MSE over all (real, generated) pairs = mean |r|^2 / P + mean |g|^2 / P - 2 <mean r, mean g> / P,
  so a resample needs the weighted mean images only (one float32 matrix product per side and batch).

Methods: KS and W1 are distances that resampling inflates (two identical sets resample to KS > 0),
so they use the "shifted" percentile interval as FID does (:mod:`medgen.metrics.intervals`); the
MSE, a smooth function of means, the plain percentile interval.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medgen.metrics._arrays import as_numpy
from medgen.metrics.intervals import bootstrap_distribution, interval_from_resamples
from medgen.metrics.resampled_stats import counts

__all__ = ["intensity_intervals"]

BINS = 1024


class _PooledIntensities:
    """KS, W1 and all-pairs MSE of batches of resamples of two image sets (see the module docstring)."""

    def __init__(self, real: np.ndarray, fake: np.ndarray, value_range: tuple[float, float], bins: int):
        lo, hi = value_range
        self.width = (hi - lo) / bins
        self.n_real, self.n_fake = len(real), len(fake)
        self.hist_r, self.hist_f = (self._histograms(x, lo, hi, bins) for x in (real, fake))
        self.pixels = real[0].size
        self.flat_r = real.reshape(len(real), -1).astype(np.float32)
        self.flat_f = fake.reshape(len(fake), -1).astype(np.float32)
        self.sq_r = (self.flat_r.astype(np.float64) ** 2).mean(axis=1)
        self.sq_f = (self.flat_f.astype(np.float64) ** 2).mean(axis=1)

    @staticmethod
    def _histograms(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
        """(N, bins) pixel counts per image; values outside the range count in the end bins."""
        n = len(x)
        b = np.clip(((x.reshape(n, -1) - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)
        flat = (np.arange(n)[:, None] * bins + b).ravel()
        return np.bincount(flat, minlength=n * bins).reshape(n, bins).astype(np.float64)

    def __call__(self, ir: np.ndarray, ifk: np.ndarray) -> np.ndarray:
        wr, wf = counts(ir, self.n_real), counts(ifk, self.n_fake)
        cdf_r = np.cumsum(wr @ self.hist_r, axis=1)
        cdf_f = np.cumsum(wf @ self.hist_f, axis=1)
        diff = cdf_r / cdf_r[:, -1:] - cdf_f / cdf_f[:, -1:]
        ks = np.abs(diff).max(axis=1)
        w1 = np.abs(diff[:, :-1]).sum(axis=1) * self.width
        tr, tf = wr.sum(axis=1), wf.sum(axis=1)
        mean_r = (wr.astype(np.float32) @ self.flat_r) / tr[:, None].astype(np.float32)
        mean_f = (wf.astype(np.float32) @ self.flat_f) / tf[:, None].astype(np.float32)
        cross = (mean_r.astype(np.float64) * mean_f).sum(axis=1) / self.pixels
        mse = wr @ self.sq_r / tr + wf @ self.sq_f / tf - 2.0 * cross
        return np.stack([ks, w1, mse], axis=1)


def intensity_intervals(real: Any, fake: Any, values: dict[str, float], *, value_range: tuple[float, float] = (0.0, 1.0),
                        bins: int = BINS, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """Intervals of ``values`` {"ks", "wasserstein", "mse"} (the reported numbers for these two image
    sets, e.g. from :func:`compare_intensities` and :func:`mse_all_pairs`), resampling images."""
    r = as_numpy(real, np.float32)
    f = as_numpy(fake, np.float32)
    if len(r) < 2 or len(f) < 2:
        raise ValueError("intensity intervals need at least 2 images on each side")
    if r.shape[1:] != f.shape[1:]:
        raise ValueError(f"real and generated images differ in shape: {r.shape[1:]} vs {f.shape[1:]}")
    if not value_range[1] > value_range[0]:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    stat = _PooledIntensities(r, f, value_range, bins)
    binned, res, ns = bootstrap_distribution(stat, np.arange(len(r)), np.arange(len(f)), n_resamples=n_resamples,
                                             seed=seed, vectorized=True)
    label = "image bootstrap, both sets"
    out = {}
    for i, (name, method) in enumerate((("ks", "shifted"), ("wasserstein", "shifted"), ("mse", "percentile"))):
        if name not in values:
            continue
        # the binned statistic's resamples, moved so that the binned whole-set value sits on the reported one
        moved = res[:, i] + (values[name] - binned[i]) if method == "shifted" else res[:, i]
        out[name] = {**interval_from_resamples(values[name], moved, level=level, method=method, n=ns,
                                               bounds=(0.0, 1.0) if name == "ks" else (0.0, None), label=f"{method} {label}"),
                     "seed": seed, "bins": bins if name != "mse" else None}
    return out
