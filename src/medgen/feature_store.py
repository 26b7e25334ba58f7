"""The features an evaluation extracted, kept in the run so intervals and comparisons never extract again.

``RUN/evaluation/features/<extractor>.npz`` (``OUT/features/`` for two image sets) holds ``real`` (N, F) and ``generated`` (M, F) and,
beside it, ``<extractor>.json`` says what they rest on: the extractor's description, the real
images (dataset, split and the ids' SHA-256, so two runs can be checked to use the same ones), the
generated set (sampler, steps, seed, n). ``medgen compare`` reads these files.
"""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.errors import UserError
from medgen.fsio import atomic_write_bytes, atomic_write_json, read_json

__all__ = ["StoredFeatures", "features_dir", "ids_digest", "load_features", "save_features", "stored_extractors"]


def features_dir(run: str | Path) -> Path:
    """RUN/evaluation/features, or OUT/features of a two-set evaluation (``--out OUT``)."""
    run = Path(run)
    return run / "features" if (run / "features").is_dir() and not (run / "evaluation").is_dir() else run / "evaluation" / "features"


def ids_digest(ids: Sequence[Any]) -> str:
    """SHA-256 of the image ids in order (the same real images, the same order, the same digest)."""
    return hashlib.sha256("\n".join(str(i) for i in ids).encode()).hexdigest()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@dataclass
class StoredFeatures:
    run: Path
    extractor: str
    real: np.ndarray
    generated: np.ndarray
    meta: dict


def save_features(folder: str | Path, extractor: str, real: np.ndarray, generated: np.ndarray, *,
                  extractor_info: dict, real_ids: Sequence[Any], real_source: dict, generated_info: dict) -> Path:
    """Write the features of one evaluation into ``folder``/features (the evaluation's output folder:
    RUN/evaluation), replacing the previous evaluation's, as metrics.json does."""
    folder = Path(folder) / "features"
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, real=np.asarray(real, np.float32), generated=np.asarray(generated, np.float32))
    path = folder / f"{_safe(extractor)}.npz"
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_json(path.with_suffix(".json"), {
        "extractor": extractor, "extractor_info": extractor_info,
        "real": {**real_source, "n": int(len(real)), "ids_sha256": ids_digest(real_ids)},
        "generated": {**generated_info, "n": int(len(generated))},
    })
    return path


def stored_extractors(run: str | Path) -> list[str]:
    return sorted(p.stem for p in features_dir(run).glob("*.npz") if p.with_suffix(".json").exists())


def load_features(run: str | Path, extractor: str) -> StoredFeatures:
    path = features_dir(run) / f"{_safe(extractor)}.npz"
    if not path.exists():
        have = stored_extractors(run)
        raise UserError(f"no stored {extractor} features (run 'medgen evaluate {run}' first"
                        + (f"; stored: {', '.join(have)}" if have else "") + ")", path)
    meta = read_json(path.with_suffix(".json"))
    if meta is None:
        raise UserError("the features' description is missing or unreadable", path.with_suffix(".json"))
    try:
        with np.load(path) as z:
            real, generated = z["real"].astype(np.float64), z["generated"].astype(np.float64)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"unreadable stored features ({err})", path) from None
    return StoredFeatures(Path(run), extractor, real, generated, meta)
