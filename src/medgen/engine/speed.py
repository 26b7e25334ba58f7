"""Opt-in speed options of a training run (``train.compile``, ``train.channels_last``,
``train.efficient_attention``) and the one line that says which options a run trained with.

None of them changes what the networks compute beyond float rounding, nor their checkpoints:
- ``efficient_attention`` switches MONAI's attention blocks (``SABlock``, ``CrossAttentionBlock``)
  to ``torch.nn.functional.scaled_dot_product_attention``, whose fused kernels on CUDA do not
  build the (tokens x tokens) attention matrix: less memory at large latents;
- ``channels_last`` stores the conv weights NHWC (NDHWC in 3D), the layout cuDNN's and oneDNN's
  fastest conv kernels use; checkpoints are written contiguous, so they load either way;
- ``compile`` compiles each network's ``forward`` in place (``nn.Module.compile``), so the
  state_dict keys stay what they were and a compiled run's checkpoints load uncompiled. The
  compiled kernels are cached on disk (Inductor's cache, under ``~/.cache/medgen/torchinductor``
  unless ``TORCHINDUCTOR_CACHE_DIR`` is set), so a second run of the same networks skips most of
  the compilation.

AMP (``train.amp``, on by default) is the fourth option; it applies on CUDA (``StepContext``),
and on a CPU only with ``train.cpu_amp`` (bf16 autocast, refused on a CPU without native bf16
instructions, which would emulate it; off by default, as results then depend on the
CPU model). ``bench/bench_speed_options.py`` measures each option against the plain step on the
machine it runs on (figures in docs/benchmarks.md): on a CPU the three above gain little, and
compiling costs more than it saves in a short run, so all three are off by default.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from medgen.errors import UserError

if TYPE_CHECKING:
    from medgen.models.base import GenerativeModel

def inductor_cache_dir() -> Path:
    """Where compiled kernels are kept between runs (Inductor's default is a folder in /tmp)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "medgen" / "torchinductor"


def networks(module: torch.nn.Module):
    """The submodules that do a family's computation: each child with a ``forward`` of its own, or,
    for a child without one (medgen's ``Denoiser`` holds its U-Net and calls it from ``eps``), the
    networks inside it."""
    for child in module.children():
        if type(child).forward is not torch.nn.Module.forward:
            yield child
        else:
            yield from networks(child)


def use_efficient_attention(model: torch.nn.Module) -> int:
    """Switch MONAI's attention blocks to scaled_dot_product_attention; returns how many were switched.
    Blocks that keep their attention matrix (``save_attn``) or add a relative position embedding
    need the explicit matrix, so they stay as they are (MONAI refuses the combination)."""
    from monai.networks.blocks import CrossAttentionBlock, SABlock

    switched = 0
    for m in model.modules():
        if isinstance(m, (SABlock, CrossAttentionBlock)) and not m.save_attn and m.rel_positional_embedding is None:
            m.use_flash_attention = True
            switched += 1
    return switched


def amp_text(device: torch.device, train_cfg, autocasts: bool = True) -> str:
    """What autocast a run trains with; ``autocasts``: whether the family's steps use it at all."""
    from medgen.engine.context import autocast_dtype

    dtype = autocast_dtype(device, train_cfg.amp, train_cfg.cpu_amp)
    if not train_cfg.amp:
        return "off"
    if not autocasts:
        return "off (this family trains in fp32)"
    if dtype is None:
        return "off (a CPU needs train.cpu_amp)"
    if device.type == "cpu":
        return "bf16 (CPU, train.cpu_amp)"
    return "bf16" if dtype == torch.bfloat16 else "fp16 (loss scaling)"


def apply_speed_options(model: "GenerativeModel", train_cfg, device: torch.device) -> dict[str, str]:
    """Apply the run's speed options to ``model`` (already on ``device``) and say what is on."""
    check_speed_options(train_cfg, device)
    on = {"autocast": amp_text(device, train_cfg, model.autocasts)}
    if train_cfg.efficient_attention:
        n = use_efficient_attention(model)
        on["efficient_attention"] = f"on ({n} attention blocks)" if n else "on (the networks have no attention block)"
    else:
        on["efficient_attention"] = "off"
    if train_cfg.channels_last:
        spatial = {2: torch.channels_last, 3: torch.channels_last_3d}
        model.to(memory_format=spatial[model.info.spatial_dims])
        on["channels_last"] = "on"
    else:
        on["channels_last"] = "off"
    if train_cfg.compile:
        nets = list(networks(model))
        for net in nets:
            net.compile(backend=train_cfg.compile_backend)
        on["compile"] = (f"on ({train_cfg.compile_backend}, {len(nets)} networks; cache "
                         f"{os.environ['TORCHINDUCTOR_CACHE_DIR']})")
    else:
        on["compile"] = "off"
    return on


def check_speed_options(train_cfg, device: torch.device) -> None:
    """What would make a run fail only at the first step, or run slower than asked, said before it
    starts: ``train.cpu_amp`` on a CPU without native bf16; for ``train.compile``, an unknown
    backend, or Inductor on a CPU (it builds C++) without a C++ compiler. Also points Inductor's
    kernel cache at ``inductor_cache_dir()`` unless the variable is set already."""
    if train_cfg.cpu_amp and train_cfg.amp and device.type == "cpu":
        from medgen.engine.context import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            raise UserError("train.cpu_amp: this CPU has no native bf16 instructions (AVX512-BF16 or AMX), so bf16 "
                            "autocast would be emulated, typically slower than fp32: set train.cpu_amp=false")
    if not train_cfg.compile:
        return
    # first: Inductor pins the variable to its /tmp default the first time torch._dynamo looks at it
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache_dir()))
    backend = train_cfg.compile_backend
    try:
        torch._dynamo.lookup_backend(backend)
    except torch._dynamo.exc.InvalidBackend:
        raise UserError(f"train.compile_backend '{backend}' is not a torch.compile backend "
                        f"(e.g. {', '.join(torch._dynamo.list_backends())}, aot_eager)") from None
    if backend == "inductor" and device.type == "cpu" and not any(
            shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        raise UserError("train.compile with the Inductor backend on a CPU needs a C++ compiler (g++ or clang++, "
                        "none found on PATH): install one, or set train.compile_backend=aot_eager or train.compile=false")


def describe(on: dict[str, str]) -> str:
    return "; ".join(f"{k} {v}" for k, v in on.items())
