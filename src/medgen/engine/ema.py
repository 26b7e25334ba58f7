"""Exponential moving average of one submodule's weights (for sampling), kept as plain tensors so
it checkpoints to safetensors. torch's AveragedModel would deep-copy the module; this keeps only
the shadow tensors.

The decay warms up: update n (from 0) uses min(decay, (1 + n) / (10 + n)), as TensorFlow's
ExponentialMovingAverage with num_updates and diffusers' EMAModel do. Without it a short run
keeps mostly its starting weights (0.999 over 180 steps leaves 84 % of them): random ones from
scratch, and, when fine-tuning on a small set (S000's 72 beta images), the model it started from."""
from __future__ import annotations

import torch


class EMA:
    def __init__(self, module: torch.nn.Module, decay: float):
        self.module, self.decay = module, decay
        self.updates = 0  # checkpointed by the trainer (state "ema_updates"), so a resume warms up exactly
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        decay = self.current_decay()
        self.updates += 1
        for k, v in self.module.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                s.lerp_(v.detach(), 1 - decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k in self.shadow:
            self.shadow[k].copy_(state[k])
