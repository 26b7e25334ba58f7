"""Comparison of the pixel-intensity distributions of real and synthetic images.

Pixels of all images of a side are pooled (optionally restricted by a mask) into one sample:

* two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``) and the 1-Wasserstein distance
  (``scipy.stats.wasserstein_distance``, in intensity units). Both run on a deterministic random
  subsample of at most ``max_samples`` pixels per side (seeded, without replacement): image
  batches hold 10^7-10^9 pixels and neither test needs that many. The KS p-value is therefore the
  p-value *for the subsample*; pixels of one image are strongly correlated, so even then it
  overstates the evidence (treat it as descriptive, the statistic is the useful number).
* histograms on common bin edges (densities, all pixels) for plotting;
* bimodality of each side, two ways, because medical intensities (background + tissue, two
  tissue classes) are often bimodal and a generator that collapses one mode is a typical failure:
  - Sarle's bimodality coefficient BC = (g^2 + 1) / (k + 3 (n-1)^2 / ((n-2)(n-3))), g the
    sample skewness and k the excess kurtosis, both bias-corrected (``scipy.stats.skew`` /
    ``kurtosis`` with bias=False). BC > 5/9 (the value of a uniform distribution) suggests
    bimodality; a Gaussian gives 1/3. It is cheap but also flags strongly skewed unimodal data.
  - a 1- vs 2-component Gaussian mixture (``sklearn.mixture.GaussianMixture``) on a subsample of
    at most ``gmm_max_samples`` values: delta_bic = BIC(1) - BIC(2) (> 10 is "very strong" support
    for two components, Kass & Raftery) and Ashman's D = sqrt(2)|m1 - m2| / sqrt(s1^2 + s2^2) of
    the two components (D > 2 means clearly separated modes, Ashman et al. 1994). ``gmm_bimodal``
    requires both: with many pixels the BIC alone prefers 2 components for any non-Gaussian
    shape (a skewed unimodal one included, which D > 2 then rejects). A flat-topped distribution
    is split into two overlapping halves with D ~ 3 (uniform: D = 3.05, BC = 5/9 exactly), so read
    the two checks together: a clear second mode gives BC well above 5/9 *and* gmm_bimodal.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medgen.metrics._arrays import as_numpy

__all__ = ["bimodality", "bimodality_coefficient", "compare_intensities", "compare_intensities_by_class"]

BC_THRESHOLD = 5.0 / 9.0


def _pixels(images: Any, mask: Any) -> np.ndarray:
    arr = as_numpy(images, np.float64)
    if mask is None:
        return arr.reshape(-1)
    m = as_numpy(mask).astype(bool)
    return arr[np.broadcast_to(m, arr.shape)]


def _split_mask(mask: Any) -> tuple[Any, Any]:
    """A mask is one array for both sides (broadcast to each batch) or a (real, fake) pair."""
    if isinstance(mask, (tuple, list)):
        if len(mask) != 2:
            raise ValueError("mask must be one array or a (real_mask, fake_mask) pair")
        return mask[0], mask[1]
    return mask, mask


def _subsample(values: np.ndarray, max_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_samples is None or values.size <= max_samples:
        return values
    return values[np.sort(rng.choice(values.size, max_samples, replace=False))]


def bimodality_coefficient(values: Any) -> float:
    """Sarle's bimodality coefficient (sample-size corrected); NaN for n < 4 or constant data."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64).reshape(-1)
    n = x.size
    if n < 4 or np.ptp(x) == 0:
        return float("nan")
    g = stats.skew(x, bias=False)
    k = stats.kurtosis(x, fisher=True, bias=False)
    return float((g**2 + 1.0) / (k + 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def bimodality(values: Any, gmm_max_samples: int = 20_000, seed: int = 0) -> dict:
    """Both bimodality checks for a 1-D sample (see module docstring)."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(values, dtype=np.float64).reshape(-1)
    bc = bimodality_coefficient(x)
    out = {
        "n": int(x.size),
        "skewness": float("nan"),
        "excess_kurtosis": float("nan"),
        "bimodality_coefficient": bc,
        "bc_threshold": BC_THRESHOLD,
        "bc_bimodal": bool(bc > BC_THRESHOLD),
        "gmm_bic_1": float("nan"),
        "gmm_bic_2": float("nan"),
        "gmm_delta_bic": float("nan"),
        "gmm_means": [float("nan")] * 2,
        "gmm_stds": [float("nan")] * 2,
        "gmm_weights": [float("nan")] * 2,
        "ashman_d": float("nan"),
        "gmm_bimodal": False,
    }
    if x.size < 4 or np.ptp(x) == 0:
        return out
    from scipy import stats

    out["skewness"] = float(stats.skew(x, bias=False))
    out["excess_kurtosis"] = float(stats.kurtosis(x, fisher=True, bias=False))
    sub = _subsample(x, gmm_max_samples, np.random.default_rng(seed)).reshape(-1, 1)
    bic1 = GaussianMixture(1, random_state=seed).fit(sub).bic(sub)
    g2 = GaussianMixture(2, random_state=seed, n_init=2).fit(sub)
    bic2 = g2.bic(sub)
    order = np.argsort(g2.means_.ravel())
    means = g2.means_.ravel()[order]
    stds = np.sqrt(g2.covariances_.ravel()[order])
    delta_bic = float(bic1 - bic2)
    ashman = float(np.sqrt(2.0) * abs(means[1] - means[0]) / np.sqrt(stds[0] ** 2 + stds[1] ** 2))
    out.update(
        gmm_bic_1=float(bic1),
        gmm_bic_2=float(bic2),
        gmm_delta_bic=delta_bic,
        gmm_means=[float(v) for v in means],
        gmm_stds=[float(v) for v in stds],
        gmm_weights=[float(v) for v in g2.weights_[order]],
        ashman_d=ashman,
        gmm_bimodal=bool(delta_bic > 10.0 and ashman > 2.0),
    )
    return out


def compare_intensities(
    real: Any,
    fake: Any,
    bins: int = 64,
    mask: Any = None,
    max_samples: int | None = 200_000,
    value_range: tuple[float, float] | None = None,
    gmm_max_samples: int = 20_000,
    seed: int = 0,
) -> dict:
    """Compare the pooled pixel intensities of two image batches (any shapes).

    mask: None, a boolean array broadcastable to each batch (e.g. one (C, H, W) body mask), or a
    (real_mask, fake_mask) pair. value_range: histogram range; default min..max over both sides.

    Returns a dict: n_real, n_fake (pixels used), n_subsample_real/fake, ks_statistic,
    ks_pvalue (for the subsample), wasserstein, histogram {bin_edges, real_density,
    fake_density}, real_mean/std, fake_mean/std, bimodality {real, fake} (see :func:`bimodality`).
    """
    from scipy import stats

    mask_real, mask_fake = _split_mask(mask)
    r = _pixels(real, mask_real)
    f = _pixels(fake, mask_fake)
    if r.size == 0 or f.size == 0:
        raise ValueError("no pixels to compare (empty batch or mask)")
    rng = np.random.default_rng(seed)
    r_sub = _subsample(r, max_samples, rng)
    f_sub = _subsample(f, max_samples, rng)
    ks = stats.ks_2samp(r_sub, f_sub)
    lo, hi = value_range if value_range is not None else (min(r.min(), f.min()), max(r.max(), f.max()))
    if hi <= lo:  # constant images: give the histogram a non-empty range
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    return {
        "n_real": int(r.size),
        "n_fake": int(f.size),
        "n_subsample_real": int(r_sub.size),
        "n_subsample_fake": int(f_sub.size),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "wasserstein": float(stats.wasserstein_distance(r_sub, f_sub)),
        "real_mean": float(r.mean()),
        "real_std": float(r.std()),
        "fake_mean": float(f.mean()),
        "fake_std": float(f.std()),
        "histogram": {
            "bin_edges": edges,
            "real_density": np.histogram(r, bins=edges, density=True)[0],
            "fake_density": np.histogram(f, bins=edges, density=True)[0],
        },
        "bimodality": {
            "real": bimodality(r_sub, gmm_max_samples, seed),
            "fake": bimodality(f_sub, gmm_max_samples, seed),
        },
    }


def _select(mask: Any, index: np.ndarray, images: np.ndarray) -> Any:
    """A per-sample mask (same ndim as the batch, same N) follows the class selection; a shared
    mask (fewer dims, or leading axis 1) is passed through unchanged."""
    if mask is None:
        return None
    m = as_numpy(mask)
    return m[index] if m.ndim == images.ndim and m.shape[0] == len(images) else m


def compare_intensities_by_class(
    real: Any, real_labels: Any, fake: Any, fake_labels: Any, mask: Any = None, **kwargs: Any
) -> dict:
    """:func:`compare_intensities` for each class label, keyed by label.

    Labels are per-sample (N,) arrays. A class present on one side only gets
    {"n_real_images", "n_fake_images", "skipped": reason} instead of a comparison; every entry
    has the image counts. ``mask`` as in compare_intensities; per-sample masks (first axis N)
    are split by class with the images. Extra keyword arguments go to compare_intensities.
    """
    r = as_numpy(real)
    f = as_numpy(fake)
    rl = as_numpy(real_labels).reshape(-1)
    fl = as_numpy(fake_labels).reshape(-1)
    if rl.size != len(r) or fl.size != len(f):
        raise ValueError("one label per image is needed on each side")
    mask_real, mask_fake = _split_mask(mask)
    out = {}
    for label in sorted(set(rl.tolist()) | set(fl.tolist())):
        ri = np.flatnonzero(rl == label)
        fi = np.flatnonzero(fl == label)
        counts = {"n_real_images": int(ri.size), "n_fake_images": int(fi.size)}
        if ri.size == 0 or fi.size == 0:
            out[label] = {**counts, "skipped": "class missing on the " + ("real" if ri.size == 0 else "fake") + " side"}
            continue
        sub_mask = None
        if mask is not None:
            sub_mask = (_select(mask_real, ri, r), _select(mask_fake, fi, f))
        out[label] = {**counts, **compare_intensities(r[ri], f[fi], mask=sub_mask, **kwargs)}
    return out
