"""Watching adversarial training: warns once when the discriminator wins outright, the losses diverge
or the samples collapse (the failures S004 reports)."""
from __future__ import annotations

import math

import torch

from medgen.models.layers import batch_std


class GANMonitor:
    """Watches adversarial training for S004's failures and warns once per kind on the console.

    ``check(name, condition, message, patience)`` returns 1.0 while the condition has held for
    ``patience`` consecutive steps (logged as ``warn_<name>``), else 0.0; ``warnings`` keeps the
    messages (also kept on the model as ``model.warnings``)."""

    def __init__(self, patience: int = 50):
        self.patience = patience
        self.streak: dict[str, int] = {}
        self.warnings: dict[str, str] = {}
        self.collapse_checks = 0
        self.last_diversity = float("nan")

    def check(self, name: str, condition: bool, message: str, patience: int | None = None) -> float:
        streak = self.streak.get(name, 0) + 1 if condition else 0
        self.streak[name] = streak
        active = streak >= (self.patience if patience is None else patience)
        if active and name not in self.warnings:
            from medgen.progress import console

            self.warnings[name] = message
            console().print(f"[yellow]warning: {message}[/yellow]")
        return float(active)

    def diverging(self, losses: dict[str, float], threshold: float) -> float:
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        big = [k for k, v in losses.items() if math.isfinite(v) and abs(v) > threshold]
        nonfinite = self.check("nonfinite", bool(bad), f"non-finite {', '.join(bad) or 'loss'}: the adversarial game diverged "
                               "(try a lower train.lr)", patience=1)
        large = self.check("diverging", bool(big), f"losses {', '.join(big) or ''} above {threshold:g} for "
                           f"{max(self.patience // 5, 1)} steps: training is diverging (S004 saw generator losses in the thousands)",
                           patience=max(self.patience // 5, 1))
        return max(nonfinite, large)

    def collapse(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None, ratio: float = 0.25,
                 every: int = 10) -> float:
        """Mode collapse: the generated batch varies far less than the real one (within each class when
        labels are given: a conditional generator can collapse to one image per class). Not judged
        during the first ``4 * patience`` steps: an untrained generator's output is nearly constant.
        Measured on every ``every``-th step only, the verdict holding in between: the two spreads cost
        2 % of a small GAN's step, and a collapse is a trend over ``patience`` steps, not one batch."""
        self.collapse_checks += 1
        if self.collapse_checks <= 4 * self.patience:
            return 0.0
        checks = max(self.patience // every, 1)  # the patience, counted in measured steps
        if self.collapse_checks % every or real.shape[0] < 2 or fake.shape[0] < 2:
            return float(self.streak.get("mode_collapse", 0) >= checks)
        r = float(batch_std(real.detach(), labels)[0].flatten()[0])
        f = float(batch_std(fake.detach(), labels)[0].flatten()[0])
        if r <= 0:
            return 0.0
        self.last_diversity = f / r
        return self.check("mode_collapse", f < ratio * r,
                          f"generated images vary {f / r:.2f}x as much as real ones{' of the same class' if labels is not None else ''} "
                          f"for {self.patience} steps: mode collapse (S004); try loss: wgan-gp or model.minibatch_std=true",
                          patience=checks)
