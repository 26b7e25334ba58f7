"""The sampler registry: how a diffusion family walks from noise to an image.

A sampler is one module with a ``Sampler`` subclass (``medgen.samplers.base``) and one
``register`` line below. Config validation, ``medgen sample``, the CLI help and the docs read
the names from here, so a new sampler needs nothing else. Modules are imported on first use
(torch loads only when sampling), as in ``medgen.models.registry``.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass

from medgen.errors import UserError


@dataclass(frozen=True)
class Registration:
    target: str  # "module:Class"
    summary: str  # one line for --help and the docs
    # the network it walks: "noise" = an eps-predicting Denoiser (DDPM, LDM), "velocity" = one trained
    # with objective rflow
    drives: str = "noise"


SAMPLERS: dict[str, Registration] = {}
_instances: dict[str, object] = {}


def register(name: str, target: str, summary: str, drives: str = "noise") -> None:
    SAMPLERS[name] = Registration(target, summary, drives)
    _instances.pop(name, None)


def names(drives: str | None = None) -> list[str]:
    """Registered sampler names (those that walk a ``drives`` network, when given), in registration order."""
    return [n for n, r in SAMPLERS.items() if drives is None or r.drives == drives]


def summary(name: str) -> str:
    return SAMPLERS[name].summary


def help_text() -> str:
    """'ddpm | ddim; rflow models: rflow | rflow-heun' for option help texts: the names, grouped by what they drive."""
    groups = {}
    for n, r in SAMPLERS.items():
        groups.setdefault(r.drives, []).append(n)
    noise = " | ".join(groups.pop("noise", []))
    rest = [f"{'rflow' if d == 'velocity' else d} models: {' | '.join(ns)}" for d, ns in groups.items()]
    return "; ".join(p for p in [noise, *rest] if p)


def check_name(name: str, what: str = "sampler") -> str:
    """``name`` if it is a registered sampler, else a UserError naming the choices (and the nearest one)."""
    if name not in SAMPLERS:
        hint = difflib.get_close_matches(str(name), names(), n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise UserError(f"unknown {what} '{name}'{extra}; samplers: {', '.join(names())}")
    return name


def get(name: str):
    """The ``Sampler`` registered as ``name`` (one shared instance: samplers hold no state)."""
    check_name(name)
    if name not in _instances:
        module, cls = SAMPLERS[name].target.split(":")
        _instances[name] = getattr(importlib.import_module(module), cls)()
    return _instances[name]


register("ddpm", "medgen.samplers.ddpm:RespacedDDPM",
         "stochastic ancestral DDPM steps on the respaced timestep list (all timesteps: plain DDPM)")
register("ddim", "medgen.samplers.ddim:DDIM", "deterministic DDIM (eta = 0): good images in tens of steps")
register("rflow", "medgen.samplers.rflow:RFlowEuler",
         "Euler steps of a rectified-flow model (objective: rflow) on MONAI's RFlowScheduler grid", drives="velocity")
register("rflow-heun", "medgen.samplers.rflow:RFlowHeun",
         "Heun (2nd-order) steps of a rectified-flow model: 2 evaluations per step, the last step Euler", drives="velocity")
