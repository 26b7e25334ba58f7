"""Checkpoints that never execute code when loaded.

A checkpoint is a folder ``checkpoints/<name>/`` holding ``model.safetensors`` (all weights),
``ema.safetensors`` (EMA weights, when used), ``optim.safetensors`` (optimiser tensors) and
``state.json`` (step, epoch, stage, optimiser hyper-parameters, RNG states, anything else
plain). It is written to a temporary sibling folder, fsynced and renamed into place, so a crash
leaves either the old or the new checkpoint, never half of one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from medgen.errors import UserError
from medgen.engine.guards import read_state
from medgen.fsio import current_umask
from medgen.weights import load_weights_file


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _flatten_optim(state: dict, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, pstate in state["state"].items():
        entry = {}
        for k, v in pstate.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}/{pid}/{k}"] = v.detach().cpu().contiguous()
                entry[k] = {"__tensor__": f"{prefix}/{pid}/{k}"}
            else:
                entry[k] = v
        plain["state"][str(pid)] = entry
    return tensors, plain


def _unflatten_optim(plain: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state = {}
    for pid, entry in plain["state"].items():
        state[int(pid)] = {k: tensors[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else v for k, v in entry.items()}
    return {"state": state, "param_groups": plain["param_groups"]}


def os_error_of(err: Exception, path: Path) -> OSError | None:
    """The OSError behind a safetensors write failure: safetensors reports I/O errors as
    ``SafetensorError('... (os error 28) ...')``, which callers could not tell from a bug."""
    m = re.search(r"\(os error (\d+)\)", str(err))
    return OSError(int(m.group(1)), os.strerror(int(m.group(1))), str(path)) if m else None


def save_checkpoint(folder: Path, model: torch.nn.Module, state: dict, optimizers: dict | None = None,
                    ema: dict[str, torch.Tensor] | None = None) -> Path:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        if ema:
            save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
        plain_state = dict(state)
        if optimizers:
            all_tensors, plain_opts = {}, {}
            for name, opt in optimizers.items():
                t, p = _flatten_optim(opt.state_dict(), name)
                all_tensors.update(t)
                plain_opts[name] = p
            if all_tensors:
                save_file(all_tensors, str(tmp / "optim.safetensors"))
            plain_state["optimizers"] = plain_opts
        (tmp / "state.json").write_text(json.dumps(plain_state, default=_json_default))
        umask = current_umask()  # safetensors and mkdtemp make owner-only files; give them the usual modes
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(f, 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            if old.exists():
                shutil.rmtree(old)
            folder.rename(old)
        tmp.rename(folder)
        _fsync_dir(folder.parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        os_err = os_error_of(err, folder) if isinstance(err, SafetensorError) else None
        if os_err is not None:
            raise os_err from err
        raise
    return folder


def _json_default(o):
    if torch.is_tensor(o):
        return o.tolist()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def load_checkpoint(folder: Path, map_location: str | torch.device = "cpu") -> dict:
    """Weights, EMA, optimiser tensors and state of a checkpoint folder (safetensors + JSON only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if folder.is_file():
        return {"model": load_weights_file(folder), "ema": None, "state": {}, "optim_tensors": {}}
    model_file = folder / "model.safetensors"
    if not model_file.exists():
        raise UserError("no checkpoint here (model.safetensors missing)", folder)
    dev = str(map_location)
    try:
        out = {"model": load_file(str(model_file), device=dev)}
        out["ema"] = load_file(str(folder / "ema.safetensors"), device=dev) if (folder / "ema.safetensors").exists() else None
        out["optim_tensors"] = load_file(str(folder / "optim.safetensors"), device=dev) if (folder / "optim.safetensors").exists() else {}
        out["state"] = read_state(folder / "state.json")  # UTF-8 JSON mapping, no NaN/Infinity, else one-line UserError
    except (SafetensorError, json.JSONDecodeError, OSError) as err:
        raise UserError(f"corrupt checkpoint ({err})", folder) from None
    return out


def restore_optimizers(optimizers: dict, ckpt: dict) -> None:
    plain = ckpt["state"].get("optimizers", {})
    for name, opt in optimizers.items():
        if name in plain:
            opt.load_state_dict(_unflatten_optim(plain[name], ckpt["optim_tensors"]))
