"""Guards around training: weights that went non-finite, and checkpoint state that is not what it
claims (a binary state.json, a position no run reaches, a checkpoint of another model). Each
ends in one line naming the file or the stage, never a traceback or kilobytes of key names."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from medgen.errors import UserError

MAX_POSITION = 10**12  # no run takes a trillion steps; a larger number is damage, not progress


def check_finite_weights(model: torch.nn.Module, stage: str, step: int, checkpoints: Path) -> None:
    """Stop a run whose weights went NaN or infinite (e.g. a learning rate far too large): every
    later step, checkpoint and sample would be NaN while the losses may still read as numbers.
    Called before the epoch's checkpoint, so the last one written keeps finite weights."""
    from medgen.engine.trainer import TrainingDiverged

    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p.detach()).all()]
    if bad:
        raise TrainingDiverged(f"stage {stage}: weights became non-finite (NaN or inf) by step {step} in {len(bad)} "
                               f"tensor(s), first {bad[0]}; stopped (last good weights in {checkpoints}). "
                               "Try a lower train.lr or set train.grad_clip")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number a checkpoint holds")


def read_state(path: Path) -> dict:
    """A checkpoint's state.json: UTF-8 JSON holding a mapping, with no NaN or Infinity in it."""
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise UserError("corrupt checkpoint: state.json is binary, not JSON (a pickle?)", path) from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, a NaN/Infinity, a 5000-digit integer
        first = str(err).splitlines()[0][:120]
        raise UserError(f"corrupt checkpoint: state.json is not valid ({first})", path) from None
    if not isinstance(state, dict):
        raise UserError("corrupt checkpoint: state.json does not hold a mapping", path)
    return state


def checked_position(state: dict, fields: tuple[str, ...], folder: Path) -> dict:
    """The training position in a checkpoint's state: whole numbers from 0 up, nothing else."""
    pos = state.get("position")
    if not isinstance(pos, dict):
        raise UserError("corrupt checkpoint: state.json has no training position", folder)
    unknown = sorted(set(pos) - set(fields))
    if unknown:
        raise UserError(f"corrupt checkpoint: unknown position field '{unknown[0]}' in state.json", folder)
    for key, value in pos.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POSITION:
            shown = repr(value) if len(repr(value)) <= 20 else repr(value)[:17] + "..."
            raise UserError(f"corrupt checkpoint: position {key} = {shown} in state.json "
                            f"(expected a whole number from 0 to {MAX_POSITION})", folder)
    return pos


def load_matching_weights(model: torch.nn.Module, weights: dict, folder: Path, family: str | None = None,
                          state: dict | None = None) -> None:
    """Load a checkpoint's weights into ``model``, all of them, or say in one line why they do not fit
    (another preset, size or family) instead of torch's list of every missing key."""
    saved_family = (state or {}).get("family")
    if family and saved_family and saved_family != family:
        raise UserError(f"checkpoint of a '{saved_family}' model, but this run's model is '{family}'", folder)
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        parts = [f"{len(v)} {what} (first: {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("with another shape", reshaped)) if v]
        raise UserError("checkpoint does not fit this run's model (another preset, profile or size?): "
                        + "; ".join(parts) + " tensors", folder)
    model.load_state_dict(weights)


# --- a model whose output does not follow its input ---------------------------------------------
FLAT_RELATIVE = 1e-4  # validation values this close to each other over a whole run: not learning
MIN_SPREAD = 0.05  # outputs varying across images less than this share of the inputs' variation


def flat_validation(log: list[dict]) -> list[str]:
    """Stages whose validation metric kept its first value to the last (three validations or more)."""
    out = []
    for stage in dict.fromkeys(r.get("stage") for r in log if r.get("event") == "epoch"):
        vals = [r for r in log if r.get("event") == "epoch" and r.get("stage") == stage and any(k.startswith("val_") for k in r)]
        if len(vals) < 3:
            continue
        key = next(k for k in vals[0] if k.startswith("val_"))
        series = [float(r[key]) for r in vals if key in r]
        lo, hi = min(series), max(series)
        if hi - lo <= FLAT_RELATIVE * max(abs(hi), 1e-12):
            out.append(f"stage {stage}: validation {key[4:]} stayed at {series[0]:.4g} from the first epoch to the last "
                       f"({len(series)} validations): the model's output does not follow its input")
    return out


def spread_across_images(x: torch.Tensor) -> float:
    """How much a batch of images differs from image to image: the mean over pixels of the std across images."""
    return float(x.float().std(dim=0).mean()) if len(x) > 1 else 0.0


@torch.no_grad()
def degenerate_output(model, images: torch.Tensor, generator: torch.Generator | None = None) -> list[str]:
    """Reconstructions that barely change with the input (e.g. black for every image), or one-pass
    samples that are all alike, measured against how much the real images differ from each other."""
    out = []
    real = spread_across_images(images)
    if real <= 0:
        return out
    was_training = model.training
    model.eval()
    try:
        if model.can_reconstruct:
            rec = model.reconstruct(images)
            spread = spread_across_images(rec)
            if spread < MIN_SPREAD * real:
                out.append(f"reconstructions barely change with the input (spread across images {spread:.3g} against "
                           f"{real:.3g} for the inputs; mean output {float(rec.float().mean()):.3g}): the model outputs "
                           "about the same image for every input, and anomaly scores would follow brightness, not content")
        elif model.can_sample and not model.samplers:  # a one-pass generator: cheap to sample (iterative ones are not run here)
            try:
                fake = model.sample(len(images), generator=generator)
            except NotImplementedError:
                return out
            spread = spread_across_images(fake)
            if spread < MIN_SPREAD * real:
                out.append(f"generated images are all alike (spread across samples {spread:.3g} against {real:.3g} for "
                           "real images): the generator has collapsed")
    finally:
        model.train(was_training)
    return out


def output_follows_input(model, ds, rows, log: list[dict], device, n: int = 16) -> list[str]:
    """The warnings for a finished run (empty when the model looks alive); each is one line."""
    import numpy as np

    warnings = flat_validation(log)
    rows = np.asarray(rows)[:n]
    if len(rows) > 1:
        images = torch.as_tensor(np.asarray(ds.images[np.sort(rows)], dtype=np.float32), device=device)
        warnings += degenerate_output(model, images, torch.Generator(device=device).manual_seed(0))
    return warnings
