"""Lay activation vectors out in 2-D and bin them into an N x N grid of cells.

The 2-D reduction uses UMAP when umap-learn is installed, else t-SNE from scikit-learn (the
`atlas` extra); `pca` needs neither and is there for quick looks and tests.
Both UMAP and t-SNE use cosine distance: directions, not magnitudes, carry what a position
"means" to the layer (Carter et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError

METHODS = ("auto", "umap", "tsne", "pca")


def available_method() -> str:
    """The reduction `auto` picks: umap, else tsne; UserError naming the extra when neither is there."""
    try:
        import umap  # noqa: F401
        return "umap"
    except ImportError:
        pass
    try:
        import sklearn  # noqa: F401
        return "tsne"
    except ImportError:
        raise UserError("the atlas needs scikit-learn (or umap-learn): pip install 'vizsuite[atlas]'") from None


def _pca(x: np.ndarray, k: int) -> np.ndarray:
    x = x - x.mean(0, keepdims=True)
    k = min(k, *x.shape)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    out = u[:, :k] * s[:k]
    # SVD signs are arbitrary: fix them so the layout does not flip between platforms
    signs = np.sign(out[np.abs(out).argmax(0), range(out.shape[1])])
    signs[signs == 0] = 1
    return out * signs


def reduce_2d(acts: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """M x C activations -> (M x 2 coordinates scaled into [0, 1], method used)."""
    if method not in METHODS:
        raise UserError(f"unknown reduction {method!r}: choose from {', '.join(METHODS)}")
    acts = np.asarray(acts, dtype=np.float32)
    n = len(acts)
    if method == "auto":
        method = available_method()
    if n < 5 and method != "pca":  # neighbour graphs need a handful of points
        method = "pca"
    if method == "pca":
        coords = _pca(acts, 2)
        if coords.shape[1] < 2:
            coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    else:
        # unit length (cosine geometry), then PCA to <= 50 dims: faster neighbours, same layout
        unit = acts / np.maximum(np.linalg.norm(acts, axis=1, keepdims=True), 1e-8)
        feats = _pca(unit, 50) if unit.shape[1] > 50 else unit - unit.mean(0, keepdims=True)
        if method == "umap":
            try:
                import umap
            except ImportError:
                raise UserError("umap-learn is not installed (pip install umap-learn), or use --reduce tsne") from None
            coords = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), min_dist=0.01, metric="cosine",
                               random_state=seed).fit_transform(unit)
        else:
            try:
                from sklearn.manifold import TSNE
            except ImportError:
                raise UserError("t-SNE needs scikit-learn: pip install 'vizsuite[atlas]'") from None
            coords = TSNE(n_components=2, perplexity=float(min(30, max(2, (n - 1) // 3))), init="pca",
                          learning_rate="auto", random_state=seed, n_jobs=1).fit_transform(feats)
    return normalize(coords), method


def normalize(coords: np.ndarray) -> np.ndarray:
    """Scale each axis into [0, 1] (a constant axis maps to 0.5)."""
    coords = np.asarray(coords, dtype=np.float64)
    lo, hi = coords.min(0), coords.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    out = (coords - lo) / span
    out[:, hi - lo <= 0] = 0.5
    return out


@dataclass
class Cell:
    """One occupied grid cell: its row/column and the sample indices that fell into it."""

    row: int
    col: int
    members: np.ndarray

    @property
    def count(self) -> int:
        return len(self.members)


def bin_grid(coords: np.ndarray, n: int, min_count: int = 1) -> list[Cell]:
    """Bin [0, 1]^2 coordinates (x, y) into an n x n grid; keep cells with >= min_count samples.

    Rows follow y (top row = smallest y), columns follow x; cells come out in row-major order.
    """
    if n < 1:
        raise UserError(f"--grid must be at least 1, got {n}")
    if min_count < 1:
        raise UserError(f"--min-count must be at least 1, got {min_count}")
    coords = np.asarray(coords)
    col = np.clip((coords[:, 0] * n).astype(int), 0, n - 1)
    row = np.clip((coords[:, 1] * n).astype(int), 0, n - 1)
    key = row * n + col
    cells = []
    for k in np.unique(key):
        members = np.flatnonzero(key == k)
        if len(members) >= min_count:
            cells.append(Cell(int(k // n), int(k % n), members))
    return cells


def cell_means(acts: np.ndarray, cells: list[Cell]) -> np.ndarray:
    """K x C mean activation vector of each cell."""
    return np.stack([acts[c.members].mean(0) for c in cells]).astype(np.float32)
