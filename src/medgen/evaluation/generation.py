"""The synthetic side of a run's evaluation: sweep settings, and generated images cached per checkpoint.

Generated images are quantised to 16 bits like an exported PNG, so a cached and a fresh set are
identical; the cache key covers the checkpoint files, n, sampler, steps, seed, guidance and labels.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.errors import UserError

__all__ = ["checkpoint_fingerprint", "generate_cached", "parse_sweep", "proportional", "sampler_names", "setting_name"]


def sampler_names() -> tuple[str, ...]:
    from medgen.samplers import names

    return tuple(names())


def parse_sweep(spec: str | Sequence[Any] | None) -> list[dict]:
    """'SAMPLER:STEPS[:GUIDANCE],...' or [{sampler, steps[, guidance]}, ...] -> [{"sampler", "steps"[, "guidance"]}, ...].
    A setting without a guidance scale uses the run's (``sample.guidance``)."""
    if spec is None:
        return []
    items: list[Any]
    if isinstance(spec, str):
        if spec.strip().lower() in ("", "none", "off"):
            return []
        items = [p.strip() for p in spec.split(",") if p.strip()]
    else:
        items = list(spec)
    known = sampler_names()
    out = []
    for item in items:
        if isinstance(item, dict):
            sampler, steps, guidance = item.get("sampler"), item.get("steps"), item.get("guidance")
        else:
            sampler, _, rest = str(item).partition(":")
            steps, _, guidance = rest.partition(":")
        sampler = str(sampler or "").strip().lower()
        if sampler not in known:
            example = ",".join(f"{s}:{k}" for s, k in zip(known, (1000, 50)))
            raise UserError(f"bad sweep setting '{item}': expected SAMPLER:STEPS[:GUIDANCE] with SAMPLER {' or '.join(known)}, e.g. {example}")
        try:
            steps = int(steps) if steps not in (None, "") else None
        except (TypeError, ValueError):
            raise UserError(f"bad sweep setting '{item}': STEPS must be an integer") from None
        if steps is not None and steps < 1:
            raise UserError(f"bad sweep setting '{item}': STEPS must be >= 1")
        setting = {"sampler": sampler, "steps": steps}
        if guidance not in (None, ""):
            try:
                setting["guidance"] = float(guidance)
            except (TypeError, ValueError):
                raise UserError(f"bad sweep setting '{item}': GUIDANCE must be a number") from None
            if not setting["guidance"] >= 0:
                raise UserError(f"bad sweep setting '{item}': GUIDANCE must be >= 0")
        out.append(setting)
    return out


def setting_name(row: dict, rows: list[dict]) -> str:
    """'ddim 50', or 'ddim 50 g3' when the guidance scale differs between the sweep's settings."""
    name = f"{row.get('sampler')} {row.get('steps')}"
    if len({r.get("guidance") for r in rows}) > 1:
        name += f" g{row.get('guidance'):g}" if row.get("guidance") is not None else ""
    return name


def checkpoint_fingerprint(run) -> str:
    from medgen.training import latest_checkpoint

    ckpt = latest_checkpoint(run)
    parts = []
    if ckpt is not None:
        for f in sorted(ckpt.iterdir()):
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def generate_cached(model, fingerprint: str, n: int, label_ids: np.ndarray | None, sampler: str, steps: int | None,
                     seed: int, guidance: float, batch_size: int, cache_dir: Path, echo) -> tuple[np.ndarray, np.ndarray | None, float, bool]:
    """Generated images, quantised to 16 bits like an exported PNG (so a cached and a fresh set are
    identical), label ids, seconds per image (measured when generated), and whether it was cached."""
    import torch

    from medgen.sampling import generate

    key_src = {"ckpt": fingerprint, "n": n, "sampler": sampler, "steps": steps, "seed": seed, "guidance": guidance,
               "labels": hashlib.sha256(np.asarray(label_ids if label_ids is not None else [], dtype=np.int64).tobytes()).hexdigest()}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir / f"samples-{sampler}-{steps}-seed{seed}-n{n}-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                labels = z["labels"] if z["labels"].size else None
                return z["images"].astype(np.float32) / 65535.0, labels, float(z["seconds_per_image"]), True
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache file: generate again
    how = f"{sampler}, {steps} steps, " if model.samplers else ""  # one-pass families have no sampler
    echo(f"generating {n} images ({how}seed {seed})")
    y = torch.as_tensor(label_ids, dtype=torch.long) if label_ids is not None else None
    t0 = time.perf_counter()
    images, labels = generate(model, n, y, sampler, steps, guidance, seed, batch_size, describe=f"evaluate {sampler}-{steps}")
    seconds = (time.perf_counter() - t0) / max(n, 1)
    q = np.round(np.clip(images, 0, 1) * 65535).astype(np.uint16)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".samples.", suffix=".npz", dir=cache_dir)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=q, labels=labels if labels is not None else np.zeros(0, np.int64), seconds_per_image=seconds)
        os.replace(tmp, path)
    except OSError:
        pass  # no cache: the next evaluation generates again
    return q.astype(np.float32) / 65535.0, labels, seconds, False


def proportional(ids: np.ndarray, n: int) -> np.ndarray:
    """n label ids in the proportions of ``ids`` (evenly spaced picks from the sorted ids)."""
    s = np.sort(ids)
    return s[np.linspace(0, len(s) - 1, n).round().astype(int)] if n > 0 else s[:0]
