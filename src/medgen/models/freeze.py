"""Freezing layers for the first epochs of a transfer (S004: a VAE's conv layers into a CVAE)."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from medgen.errors import UserError


class FreezeSchedule:
    """Parameters whose names start with one of ``prefixes`` (at a dot boundary) get
    ``requires_grad=False`` while ``epoch < epochs`` and ``True`` afterwards. Their norm layers are
    kept in eval mode while frozen, so batch-norm running statistics do not move either. (Adam skips
    parameters without a gradient, so frozen weights stay bit-identical.)"""

    def __init__(self, model: nn.Module, prefixes: Sequence[str], epochs: int):
        self.prefixes = list(prefixes)
        self.epochs = epochs
        self.frozen = False
        self.params = [p for n, p in model.named_parameters() if self._match(n)]
        self.modules = [m for n, m in model.named_modules() if n and self._match(n)
                        and isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm))]
        for prefix in self.prefixes:
            if not any(self._match(n, [prefix]) for n, _ in model.named_parameters()):
                tops = sorted({".".join(n.split(".")[:2]) for n, _ in model.named_parameters()})
                raise UserError(f"model.freeze: '{prefix}' names no parameters; prefixes here include: {', '.join(tops)}")

    def _match(self, name: str, prefixes: Sequence[str] | None = None) -> bool:
        return any(name == p or name.startswith(p.rstrip(".") + ".") for p in (prefixes or self.prefixes))

    def on_epoch_start(self, epoch: int) -> None:
        self.frozen = bool(self.prefixes) and epoch < self.epochs
        for p in self.params:
            p.requires_grad_(not self.frozen)

    def before_step(self) -> None:
        """Called at the start of every training step (the trainer puts the model back in train mode)."""
        if self.frozen:
            for m in self.modules:
                m.eval()
