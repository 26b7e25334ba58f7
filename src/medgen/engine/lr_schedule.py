"""Learning-rate schedules that are a function of the stage's step alone.

Computed from the step rather than kept as scheduler state, so a resumed run (or one whose
optimiser state was restored) continues on exactly the curve it was on, and the base rates are
the ones the optimisers were built with (a GAN's generator and discriminator keep their ratio).
"""
from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate for the optimiser step that follows ``step`` finished ones."""
    if schedule == "constant" or total <= 1:
        return 1.0
    if schedule == "cosine":
        # half cosine from 1 at the first step to 0 after the last (Loshchilov & Hutter 2017, no restarts)
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    raise ValueError(f"unknown learning-rate schedule '{schedule}' (one of {', '.join(SCHEDULES)})")


def base_rates(optimizers: dict) -> dict[str, list[float]]:
    """The learning rate of every parameter group, as the optimisers were built."""
    return {name: [g["lr"] for g in opt.param_groups] for name, opt in optimizers.items()}


def set_rates(optimizers: dict, base: dict[str, list[float]], factor: float) -> None:
    for name, opt in optimizers.items():
        for group, lr in zip(opt.param_groups, base[name]):
            group["lr"] = lr * factor
