"""What the trainer keeps per stage: where the run is (``Position``, checkpointed), one stage's plan
and running state (``StagePlan``), and the data a model's ``on_stage_start`` sees (``StageData``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medgen.engine.batches import iterate_batches
from medgen.engine.context import StepContext


@dataclass
class StagePlan:
    """One stage's plan and running state, handed between the steps of ``Trainer._fit_stage``."""

    name: str
    cfg: Any  # the stage's train settings (Config.stage)
    batch_size: int
    per_rank: int  # items each process takes per epoch
    batches_per_epoch: int
    epochs: int  # the stage's epochs: train.epochs, or more where train.min_steps needs them
    total: int  # optimiser steps the stage will take
    ctx: StepContext | None = None
    optimizers: dict = field(default_factory=dict)
    plateau: dict | None = None
    base_lrs: dict = field(default_factory=dict)  # each optimiser's group rates as built (lr schedules scale them)
    since_best: int = 0
    consecutive_bad: int = 0
    last_val: dict = field(default_factory=dict)
    started: float = 0.0

    def at_max_steps(self, stage_step: int) -> bool:
        return bool(self.cfg.max_steps and stage_step >= self.cfg.max_steps)


@dataclass
class Position:
    stage_index: int = 0
    epoch: int = 0
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimiser iterations over the whole run
    stage_step: int = 0



class StageData:
    """What ``on_stage_start`` may use: the training images in batches (e.g. to cache latents)."""

    def __init__(self, trainer, batch_size: int):
        self.trainer, self.batch_size = trainer, batch_size
        self.device = trainer.device
        self.generator = trainer.generator

    def train_batches(self):
        t = self.trainer
        for _, batch in iterate_batches(t.ds, t.train_rows, t.train_labels, self.batch_size, t.device):
            yield batch

    @property
    def n_train(self) -> int:
        return len(self.trainer.train_rows)
