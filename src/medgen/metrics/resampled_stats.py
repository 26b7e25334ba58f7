"""FID, KID and PRDC of bootstrap resamples of two feature sets, for batches of resamples at once.

A resample is a vector of counts per row (how often each image was drawn). Each statistic is
called with index batches ``(b, N)`` and ``(b, M)`` (``bootstrap_distribution(..., vectorized=True)``
over ``np.arange(N)``, ``np.arange(M)``) and returns ``b`` values; everything that does not depend on
the resample is computed once in ``__init__``. The results equal the statistic recomputed on the
resampled feature matrices (to rounding), so the intervals are those of the plain bootstrap.

* :class:`FIDBootstrap`: the mean and covariance of a resample are weighted sums of the rows. The
  outer products of the (centred) rows are stored once, so the covariances of a whole batch are one
  matrix product (counts x outer products). Only the span of the real covariance matters for
  Tr sqrtm(S1 S2), so covariances are taken there (dead feature units drop out), and the trace is
  the sum of the square roots of the eigenvalues of L' S2 L with S1 = L L' (Cholesky; pivoted
  Cholesky where a resample's S1 is singular): one factorisation and one eigenvalue-only
  decomposition per resample instead of the two full eigen-decompositions of
  :func:`medgen.metrics.frechet.frechet_distance`, which stays the route where this one is not finite.
* :class:`KIDBootstrap`: the kernel matrices are computed once; the unbiased MMD^2 of a resample
  is ``w'Kw - w.diag(K)`` etc., matrix products over the batch.
* :class:`PRDCBootstrap`: distances computed once, each point's nearest neighbours sorted once. The
  k-th neighbour radius of a resampled point is found by walking its sorted neighbours, counting
  each by how often it was drawn; copies of the point itself are not neighbours (they would make
  every duplicated point's radius 0). A ball reaches beyond the point's ``CAP_FACTOR * k``-th
  neighbour only when fewer than k of those were drawn (about 1 point in 1,000 for k = 5), so the
  real/generated pairs within that distance are listed once and a resample reads only them, as
  sparse products; the rare wider ball reads its whole distance row.

Cost per 1,000 resamples of 999 + 1,001 breast-phantom images (process CPU time, one BLAS thread,
the other core busy; docs/evaluation.md, 2026-12-07): 128-d domain features (126 dimensions in the
real span) FID 1.6 s, PRDC 0.48 s, KID 0.25 s; 26-d texture features FID 0.12 s, PRDC 0.48 s, KID
0.25 s. The FID's per-resample covariances (about 1 ms) and eigenvalues remain the largest part.
"""
from __future__ import annotations

import numpy as np

from medgen.metrics.frechet import frechet_distance
from medgen.metrics.kid import kid_kernels

__all__ = ["FIDBootstrap", "KIDBootstrap", "PRDCBootstrap", "counts"]

OUTER_PRODUCTS_BYTES = 64 * 2**20  # above this, covariances are one matrix product per resample instead
FLOAT32_ROWS_PER_DIM = 4  # rows per covariance dimension from which the float32 route is used
CHUNK_ELEMENTS = 4_000_000  # (resamples x pairs) handled at once by PRDC: bounds the memory of its masks


def counts(index_batch: np.ndarray, n: int) -> np.ndarray:
    """(b, n) how often each of n rows was drawn in each resample of a (b, n_drawn) index batch."""
    b = index_batch.shape[0]
    flat = (np.arange(b)[:, None] * n + index_batch).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


class _Moments:
    """Mean, trace of the covariance and covariance within a subspace of resamples of one feature
    matrix (N, F), from count vectors (unbiased covariance, as ``np.cov``)."""

    def __init__(self, x: np.ndarray, basis: np.ndarray):
        """basis (F, r): orthonormal columns spanning the subspace whose covariance is needed."""
        self.n = x.shape[0]
        self.mean = x.mean(axis=0)
        centred = x - self.mean  # centring once keeps the one-pass covariance free of cancellation
        self.centred, self.basis = centred, basis
        self.sq_norms = (centred * centred).sum(axis=1)
        proj = centred @ basis
        r = basis.shape[1]
        upper = np.triu_indices(r)
        self.r = r
        # the packed index of every (i, j) of an r x r matrix: unpacking is one gather
        index = np.zeros((r, r), dtype=np.int64)
        index[upper] = np.arange(len(upper[0]))
        self.unpack = np.maximum(index, index.T).ravel()
        self.proj, self.outer = proj, None
        if self.n * len(upper[0]) * 8 <= OUTER_PRODUCTS_BYTES:
            self.full_gram = (proj.T @ proj)[upper]  # the whole set's sum of outer products, in float64
            # float32 only for the resample's departure from the whole set (counts - 1, small integers,
            # exact in float32): that term is ~1/sqrt(N) of the covariance, so its rounding moves the
            # covariance by ~1e-8 of itself, far below any bootstrap spread, at half the cost of float64
            # (and the outer products are built in float32 too: half the memory traffic).
            # Not with few rows per dimension: resampled covariances are then singular, and the square
            # roots of their zero eigenvalues would amplify that rounding.
            rows = proj.astype(np.float32) if self.n >= FLOAT32_ROWS_PER_DIM * r else proj
            self.outer = np.ascontiguousarray(rows[:, upper[0]] * rows[:, upper[1]])  # row-major: the faster product

    def __call__(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(means (b, F), traces of the covariances (b,), covariances in the subspace (b, r, r)) of the
        resamples with counts w (b, N)."""
        total = w.sum(axis=1)
        shift = w @ self.centred / total[:, None]
        trace = (w @ self.sq_norms - total * (shift * shift).sum(1)) / (total - 1)
        if self.outer is not None:
            packed = self.full_gram + ((w - 1.0).astype(self.outer.dtype) @ self.outer).astype(np.float64)
            gram = packed[:, self.unpack].reshape(w.shape[0], self.r, self.r)
        else:
            gram = np.stack([(self.proj * wi[:, None]).T @ self.proj for wi in w]).reshape(w.shape[0], self.r, self.r)
        sp = shift @ self.basis
        gram -= (sp * total[:, None])[:, :, None] * sp[:, None, :]  # in place: gram is this call's own array
        gram /= (total - 1)[:, None, None]
        return self.mean + shift, trace, gram


def _trace_sqrt_products(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Tr sqrtm(S1_i S2_i) for stacks (b, F, F): the eigenvalues of L' S2 L with S1 = L L'."""
    try:
        low = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:  # a singular S1 (a rare feature no drawn image shows)
        low = np.stack([_semidefinite_factor(a) for a in s1])
    m = np.swapaxes(low, 1, 2) @ s2 @ low
    vals = np.linalg.eigvalsh((m + np.swapaxes(m, 1, 2)) / 2)
    tol = np.maximum(vals.max(axis=1, keepdims=True), 0.0) * s1.shape[1] * np.finfo(np.float64).eps
    return np.sqrt(np.where(vals > tol, vals, 0.0)).sum(axis=1)


def _semidefinite_factor(s: np.ndarray) -> np.ndarray:
    """L (F, F) with S = L L' for a positive semi-definite S: pivoted Cholesky (LAPACK ``pstrf``),
    stopped where the remaining variance is rounding (as frechet's eigenvalue clipping); the columns
    beyond the rank are 0."""
    from scipy.linalg.lapack import dpstrf

    c, piv, rank, info = dpstrf(s, lower=1)
    if info < 0:
        raise np.linalg.LinAlgError(f"pstrf failed (info {info})")
    factor = np.tril(c)
    factor[:, rank:] = 0.0
    out = np.empty_like(factor)
    out[piv - 1] = factor  # undo the pivoting: S = P L L' P'
    return out


class FIDBootstrap:
    """Fréchet distance between resamples of x (N, F) and of each generated set (M_j, F).

    Called with (b, N) real and (b, M_j) generated index batches it returns (b, g). The trace of
    sqrtm(S1 S2) only involves S2 within the span of S1, and a resample's S1 spans at most what the
    whole real set spans: both covariances are taken within that span (r <= F dimensions; features
    that are constant on the real set, such as a CNN's dead units, drop out), where S1 is usually
    positive definite. Means and traces stay in all F dimensions.
    """

    def __init__(self, x: np.ndarray, generated: list[np.ndarray]):
        vals, vecs = np.linalg.eigh(np.atleast_2d(np.cov(x, rowvar=False)))
        tol = max(vals.max(initial=0.0), 0.0) * x.shape[1] * np.finfo(np.float64).eps  # as frechet's _psd_sqrt
        span = vecs[:, vals > tol]
        self.real = _Moments(x, span)
        self.generated = [_Moments(y, span) for y in generated]

    def __call__(self, ix: np.ndarray, *iys: np.ndarray) -> np.ndarray:
        mu1, tr1, s1 = self.real(counts(ix, self.real.n))
        out = np.empty((ix.shape[0], len(iys)))
        for j, (mom, iy) in enumerate(zip(self.generated, iys)):
            mu2, tr2, s2 = mom(counts(iy, mom.n))
            tr = _trace_sqrt_products(s1, s2) if s1.shape[1] else np.zeros(len(s1))
            diff = mu1 - mu2
            fid = (diff * diff).sum(1) + tr1 + tr2 - 2.0 * tr
            for i in np.flatnonzero(~np.isfinite(fid)):  # the reference route on the full covariances, with its eps retry
                fid[i] = self._reference(ix[i], iy[i], j)
            out[:, j] = np.maximum(fid, 0.0)
        return out

    def _reference(self, ix: np.ndarray, iy: np.ndarray, j: int) -> float:
        x = self.real.centred[ix] + self.real.mean
        y = self.generated[j].centred[iy] + self.generated[j].mean
        return frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))


class KIDBootstrap:
    """Unbiased polynomial-kernel MMD^2 of resampled sets from kernels computed once.

    Called with index batches (b, N) and (b, M); returns (b,). Within a set, pairs of copies of
    one row are left out as the unbiased estimator leaves out i == j: counted, k(x, x) would
    inflate the resampled value.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
                 kernels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
        """kernels: (K_xx, K_xy, K_yy) with these kernel settings, when the caller has them (medgen.metrics.kid.kid_kernels)."""
        self.kxx, self.kxy, self.kyy = kernels or kid_kernels(x, y, degree, gamma, coef0, bounded=False)

    def __call__(self, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
        wx, wy = counts(ix, self.kxx.shape[0]), counts(iy, self.kyy.shape[0])
        return self._within(wx, self.kxx) + self._within(wy, self.kyy) - 2.0 * np.einsum(
            "bi,bi->b", wx @ self.kxy, wy) / (ix.shape[1] * iy.shape[1])

    @staticmethod
    def _within(w: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Mean kernel over pairs of drawn rows of different origin (the U-statistic's i != j)."""
        sq = w * w
        return (np.einsum("bi,bi->b", w @ k, w) - sq @ np.diag(k)) / (w.sum(1) ** 2 - sq.sum(1))


class _Balls:
    """The k-th neighbour radius of every point of one set, within a resample of that set, and the
    points of the other set that such a ball can reach."""

    CAP_FACTOR = 3  # pairs are listed up to the (CAP_FACTOR * k)-th neighbour's distance

    def __init__(self, d_self: np.ndarray, d_other: np.ndarray, k: int):
        """d_self (n, n): distances within the set; d_other (n, m): to the other set's points."""
        from scipy import sparse

        n, m = d_other.shape
        self.k = k
        np.fill_diagonal(d_self, np.inf)  # a point is not its own neighbour
        self.d_self = d_self
        self.width = min(n - 1, self.CAP_FACTOR * k)
        # the nearest `width` neighbours of each point, in order (a partial sort: the full order of a
        # point's neighbours is only needed for the few balls that reach beyond them, see _sorted_row)
        near = np.argpartition(d_self, self.width - 1, axis=1)[:, :self.width] if self.width < n - 1 else \
            np.argsort(d_self, axis=1)[:, :-1]  # the last column is the point itself (inf)
        near_dist = np.take_along_axis(d_self, near, axis=1)
        rank = np.argsort(near_dist, axis=1, kind="stable")
        self.order, self.dist = np.take_along_axis(near, rank, axis=1), np.take_along_axis(near_dist, rank, axis=1)
        self.cap = self.dist[:, self.width - 1]
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.d_other = d_other
        self.rows, self.cols = np.nonzero(d_other < self.cap[:, None])
        self.pair_dist = d_other[self.rows, self.cols]
        ones = np.ones(self.rows.size, dtype=np.float32)
        # pair -> its point / its other point: "any pair of point i" is a sparse matrix product
        self.to_row = sparse.csr_matrix((ones, (np.arange(self.rows.size), self.rows)), shape=(self.rows.size, n))
        self.to_col = sparse.csr_matrix((ones, (np.arange(self.rows.size), self.cols)), shape=(self.rows.size, m))

    def radii(self, c: np.ndarray) -> np.ndarray:
        """(b, n) k-th neighbour distance of every point among the drawn points (counts c (b, n),
        with multiplicity); inf where fewer than k other points were drawn."""
        n = c.shape[1]
        # counts are small integers: gathered as int16, a quarter of float64's memory traffic
        drawn = c.astype(np.int16)[:, self.order[:, :self.width]]  # (b, n, width)
        reached = np.cumsum(drawn, axis=2, dtype=np.int16) >= self.k
        found = reached[:, :, -1]  # a running count never falls: reached anywhere is reached at the end
        out = np.where(found, self.dist[np.arange(n), reached.argmax(axis=2)], np.inf)
        if self.width < n - 1:  # the few points with fewer than k drawn among their first neighbours
            for b, i in zip(*np.nonzero(~found)):
                order, dist = self._sorted_row(i)
                reached = np.cumsum(c[b, order]) >= self.k
                if reached.any():
                    out[b, i] = dist[reached.argmax()]
        return out

    def _sorted_row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """All other points in order of distance from point i, and their distances (sorted on first use)."""
        if i not in self._rows:
            order = np.argsort(self.d_self[i], kind="stable")[:-1]  # the last one is the point itself (inf)
            self._rows[i] = order, self.d_self[i, order]
        return self._rows[i]

    def any_per_row(self, mask: np.ndarray) -> np.ndarray:
        """(b, n): whether any listed pair of each point is set in mask (b, pairs)."""
        return np.asarray(self.to_row.T.dot(mask.T.astype(np.float32))).T > 0

    def any_per_col(self, mask: np.ndarray) -> np.ndarray:
        """(b, m): whether any listed pair of each other-set point is set in mask (b, pairs)."""
        return np.asarray(self.to_col.T.dot(mask.T.astype(np.float32))).T > 0

    def beyond_cap(self, radii: np.ndarray):
        """(resample, point, other points) for the balls wider than the listed pairs reach: the
        other set's points at distances in [cap, radius)."""
        for b, i in zip(*np.nonzero(radii > self.cap[None, :])):
            row = self.d_other[i]
            yield b, i, np.flatnonzero((row >= self.cap[i]) & (row < radii[b, i]))


class PRDCBootstrap:
    """Precision, recall, density and coverage of resampled sets from distances computed once.

    Called with index batches (b, N) and (b, M) it returns (b, 4); with one resample's index
    arrays (N,) and (M,) it returns (4,), in the order (precision, recall, density, coverage). The
    values match :func:`medgen.metrics.prdc` on the resampled feature matrices except that a point's
    own copies are not its neighbours.
    """

    NAMES = ("precision", "recall", "density", "coverage")

    def __init__(self, x: np.ndarray, y: np.ndarray, k: int = 5):
        from sklearn.metrics import pairwise_distances

        if not 1 <= k < min(x.shape[0], y.shape[0]):
            raise ValueError(f"k must be in [1, {min(x.shape[0], y.shape[0]) - 1}], got {k}")
        self.k = k
        d_xy = pairwise_distances(x, y).astype(np.float32)
        self.real = _Balls(pairwise_distances(x).astype(np.float32), d_xy, k)
        self.fake = _Balls(pairwise_distances(y).astype(np.float32), d_xy.T, k)
        self.n, self.m = d_xy.shape

    def __call__(self, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
        if ix.ndim == 1:
            return self(ix[None], iy[None])[0]
        cx, cy = counts(ix, self.n), counts(iy, self.m)
        pairs = max(self.real.rows.size, self.fake.rows.size, self.n * self.real.width, self.m * self.fake.width, 1)
        step = max(1, CHUNK_ELEMENTS // pairs)
        return np.concatenate([self._batch(cx[s:s + step], cy[s:s + step]) for s in range(0, len(cx), step)])

    def _batch(self, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
        rx, ry = self.real.radii(cx), self.fake.radii(cy)
        real, fake = self.real, self.fake
        # real balls: generated point j inside the ball of real point i
        inside = real.pair_dist[None, :] < rx[:, real.rows]  # (b, pairs)
        in_drawn = inside & (cx[:, real.rows] > 0)
        fake_covered = real.any_per_col(in_drawn)
        in_balls = (in_drawn * cx[:, real.rows] * cy[:, real.cols]).sum(axis=1)
        real_has_fake = real.any_per_row(inside & (cy[:, real.cols] > 0))
        for r, i, js in real.beyond_cap(rx):
            if cx[r, i] > 0:
                fake_covered[r, js] = True
                in_balls[r] += cx[r, i] * cy[r, js].sum()
            real_has_fake[r, i] |= bool((cy[r, js] > 0).any())
        # generated balls: real point i inside the ball of generated point j
        real_covered = fake.any_per_col(
            (fake.pair_dist[None, :] < ry[:, fake.rows]) & (cy[:, fake.rows] > 0))
        for r, j, iis in fake.beyond_cap(ry):
            if cy[r, j] > 0:
                real_covered[r, iis] = True
        nx, ny = cx.sum(axis=1), cy.sum(axis=1)
        return np.stack([(cy * fake_covered).sum(1) / ny, (cx * real_covered).sum(1) / nx,
                         in_balls / (self.k * ny), (cx * real_has_fake).sum(1) / nx], axis=1)
