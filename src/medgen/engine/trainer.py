"""The training loop shared by every family.

Per stage: seeded epoch permutations, batches gathered straight from the memory-mapped cache,
``model.training_step``, EMA, logging (metrics.jsonl + TensorBoard), validation every N epochs,
best/last checkpoints, early stopping and reduce-LR-on-plateau when configured. Everything that
makes a run random (torch, numpy and python RNGs, the trainer's generator, the position in the
epoch) is checkpointed, so ``--resume`` continues exactly where the run stopped.

Under torchrun (``medgen.engine.distributed``) every process runs this loop on its shard of each
epoch; only rank 0 writes the log, TensorBoard and checkpoints. A one-process run takes none of
the multi-process branches, so it is unchanged bit for bit.
"""
from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np
import torch

from medgen.data.dataset import PreparedDataset
from medgen.engine import distributed as dist
from medgen.engine.batches import iterate_batches
from medgen.engine.checkpoint import load_checkpoint, restore_optimizers, save_checkpoint
from medgen.engine.guards import check_finite_weights, checked_position, load_matching_weights
from medgen.engine.lr_schedule import base_rates, lr_factor, set_rates
from medgen.engine.context import StepContext
from medgen.engine.ema import EMA
from medgen.engine.rng import rng_state, seed_everything, set_rng_state
from medgen.engine.stage import Position, StageData, StagePlan
from medgen.engine.speed import apply_speed_options, describe
from medgen.errors import UserError
from medgen.models.base import GenerativeModel
from medgen.progress import console, progress_bar
from medgen.rundir import RunDir


class TrainingDiverged(UserError):
    """Too many non-finite losses in a row."""


def checkpoint_due(budget: float | None, cost: float, done_at: float, now: float) -> bool:
    """The checkpoint budget's rule: write the next periodic checkpoint once the training time since
    the last one is at least ``cost / budget`` (the last one took ``cost`` seconds and ended at
    ``done_at``). Checkpoints then take at most ``budget`` of the run, and a crash loses at most
    about ``1 / budget`` checkpoint writes' worth of training (50 at the default 2 %) plus an epoch.
    ``budget`` None: after every epoch."""
    return budget is None or cost <= budget * (now - done_at)


class Trainer:
    def __init__(self, model: GenerativeModel, cfg, ds: PreparedDataset, run: RunDir,
                 train_rows: np.ndarray, val_rows: np.ndarray, device: torch.device):
        self.model, self.cfg, self.ds, self.run = model, cfg, ds, run
        self.train_rows, self.val_rows = train_rows, val_rows
        self.train_labels = ds.label_ids(train_rows)
        self.val_labels = ds.label_ids(val_rows)
        self.device = device
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = self.rank == 0  # the only process that writes into the run directory
        # each rank draws its own noise; rank 0 keeps the run's seed, so one process is unchanged
        self.generator = seed_everything(cfg.train.seed + self.rank)
        self.pos = Position()
        self.best: dict[str, float] = {}
        self.ema: EMA | None = None
        self.ema_stage: str | None = None
        self.writer = None
        self._stop_requested = False
        self._last_checkpoint: tuple[float, float] | None = None  # (seconds it took to write, when it was done)
        self.speed_options: dict[str, str] = {}

    # --- checkpoints ----------------------------------------------------------------------
    def _state(self, extra: dict | None = None) -> dict:
        rngs = dist.all_gather_object(rng_state(self.generator))  # every rank's, so a resume is exact
        state = {"position": vars(self.pos).copy(), "rng": rngs[0], "best": self.best,
                 "stage": self.model.stages[min(self.pos.stage_index, len(self.model.stages) - 1)],
                 "ema_stage": self.ema_stage, "ema_updates": self.ema.updates if self.ema else 0,
                 "family": self.cfg.model.family, **(extra or {})}
        if self.world > 1:
            state.update(world_size=self.world, rng_other_ranks=rngs[1:])
        return state

    def save(self, name: str, optimizers: dict, extra: dict | None = None) -> None:
        state = self._state(extra)  # on every rank: it gathers their RNG states
        if self.main:
            ema = {f"{self.ema_stage_target}.{k}": v for k, v in self.ema.state_dict().items()} if self.ema else None
            save_checkpoint(self.run.checkpoints / name, self.model, state, optimizers, ema)
            if name.startswith("step-"):
                keep = self.cfg.train.keep_last
                old = sorted(p for p in self.run.checkpoints.glob("step-*") if p.is_dir())[:-keep]
                for p in old:
                    import shutil

                    shutil.rmtree(p, ignore_errors=True)
        dist.barrier()  # no rank runs ahead of a checkpoint that is still being written

    def _step_checkpoint_due(self, forced: bool) -> bool:
        """Whether this epoch end writes a step checkpoint. On small data an epoch can be a few steps,
        and a checkpoint after each would take a large share of the run (5 % of the trainer bench's
        8-step epochs), so ``train.checkpoint_budget`` caps that share: see ``checkpoint_due``. The
        first epoch end of a run, the end of a stage and a stop always write one. With several
        processes rank 0 decides (a checkpoint is a step every rank takes together)."""
        due = forced or self._last_checkpoint is None or checkpoint_due(
            self.cfg.train.checkpoint_budget, *self._last_checkpoint, now=time.perf_counter())
        return bool(dist.broadcast_object(due))

    def resume_from(self, ckpt_dir: Path) -> dict:
        ckpt = load_checkpoint(ckpt_dir, self.device)
        load_matching_weights(self.model, ckpt["model"], ckpt_dir, self.cfg.model.family, ckpt["state"])
        st = ckpt["state"]
        self.pos = Position(**checked_position(st, tuple(vars(Position())), ckpt_dir))
        self.best = st.get("best", {})
        rngs = [st["rng"], *st.get("rng_other_ranks", [])]
        if st.get("world_size", 1) != self.world and self.main:
            console().print(f"[yellow]resuming with {self.world} process(es) a run checkpointed with {st.get('world_size', 1)}: "
                            "the epoch in progress is split differently, so this is not an exact continuation[/yellow]")
        if self.rank < len(rngs):
            set_rng_state(rngs[self.rank], self.generator)
        else:  # a rank the checkpoint did not have: a fresh stream, distinct per rank and resume point
            self.generator = seed_everything(int(np.random.SeedSequence([self.cfg.train.seed, self.rank, self.pos.step]).generate_state(1)[0]))
        return ckpt

    # --- loop -----------------------------------------------------------------------------
    def fit(self, resume_ckpt: Path | None = None) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        ckpt = self.resume_from(resume_ckpt) if resume_ckpt else None
        if ckpt is not None and self.main:
            self._truncate_log(self.pos.step)
        self.writer = SummaryWriter(str(self.run.logs)) if self.main else _NoWriter()
        self.model.to(self.device)
        dist.broadcast_module(self.model)  # every rank starts from rank 0's weights
        self.speed_options = apply_speed_options(self.model, self.cfg.train, self.device)
        if self.main and any(not v.startswith("off") for v in self.speed_options.values()):
            console().print(f"speed options: {describe(self.speed_options)}")  # metrics.json keeps them either way
        handlers = {}
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.getsignal(sig)
                signal.signal(sig, self._on_signal)
        summary: dict = {}
        try:
            for si in range(self.pos.stage_index, len(self.model.stages)):
                stage = self.model.stages[si]
                if si != self.pos.stage_index:
                    self.pos = Position(stage_index=si, step=self.pos.step)
                summary[stage] = self._fit_stage(stage, ckpt if si == self.pos.stage_index else None)
                ckpt = None
                self.pos = Position(stage_index=si + 1, step=self.pos.step)
            self.save("final", {}, {"finished": True})
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            self.writer.close()
        return summary

    def _on_signal(self, signum, frame):
        """Ctrl-C / SIGTERM: finish the current step, save a checkpoint, stop. A second one stops at once."""
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        if self.main:
            console().print("[yellow]stopping: saving a checkpoint after this step (press Ctrl-C again to abort at once)[/yellow]")

    def _log(self, record: dict) -> None:
        if self.main:
            self.run.log(record)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines past the checkpoint we resume from: those steps are about to be replayed."""
        path = self.run.logs / "metrics.jsonl"
        if path.exists():
            import json

            keep = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= step:
                        keep.append(line)
                except json.JSONDecodeError:
                    continue
            from medgen.fsio import atomic_write_text

            atomic_write_text(path, "".join(line + "\n" for line in keep))

    def _fit_stage(self, stage: str, ckpt: dict | None) -> dict:
        st = self._plan_stage(stage)
        if st.total == 0:
            console().print(f"[yellow]stage {stage}: 0 epochs, skipped[/yellow]")
            return {"skipped": True}
        if self.world > 1 and self.main:
            console().print(f"stage {stage}: batch {st.batch_size} per process x {self.world} processes = effective batch {st.batch_size * self.world}")
        self._start_stage(st)
        if ckpt is not None:
            self._restore_stage(st, ckpt)
        st.since_best = int((ckpt or {}).get("state", {}).get("since_best", 0))
        st.started = time.time()
        with progress_bar(f"train {stage}", st.total) as advance:
            advance(self.pos.stage_step)
            for epoch in range(self.pos.epoch, st.epochs):
                self.pos.epoch = epoch
                self.model.on_epoch_start(stage, epoch)
                st.ctx.epoch = epoch
                sums, count = self._train_epoch(st, epoch, advance)
                if self._end_epoch(st, epoch, sums, count):
                    break
        return self._finish_stage(st)

    def _plan_stage(self, stage: str) -> StagePlan:
        scfg = self.cfg.stage(stage)
        # each rank takes every world-th item of the epoch's permutation, padded (like torch's
        # DistributedSampler) so that all ranks run the same number of steps
        per_rank = math.ceil(len(self.train_rows) / self.world)
        bs = min(scfg.batch_size, max(1, per_rank))
        batches_per_epoch = math.ceil(per_rank / bs)
        epochs = scfg.epochs
        if scfg.min_steps and epochs > 0:
            epochs = max(epochs, math.ceil(scfg.min_steps / batches_per_epoch))
        total = epochs * batches_per_epoch
        if scfg.max_steps:
            total = min(total, scfg.max_steps)
        return StagePlan(stage, scfg, bs, per_rank, batches_per_epoch, epochs, total)

    def _start_stage(self, st: StagePlan) -> None:
        """Step context, the model's stage hook, optimisers, LR plateau schedulers and EMA."""
        scfg, model = st.cfg, self.model
        st.ctx = StepContext(self.device, scfg.amp, scfg.grad_clip, self.generator, scfg.cpu_amp)
        st.ctx.stage = st.name
        model.train()
        model.on_stage_start(st.name, StageData(self, st.batch_size))
        dist.broadcast_module(model, params=False)  # whatever a stage start computed with per-rank noise follows rank 0
        st.optimizers = st.ctx.optimizers = model.optimizers(st.name, scfg)
        if scfg.lr_schedule != "constant" and scfg.lr_plateau_patience:
            raise UserError(f"stage {st.name}: train.lr_schedule={scfg.lr_schedule} and train.lr_plateau_patience "
                            "both set the learning rate; choose one")
        st.base_lrs = base_rates(st.optimizers)
        if scfg.lr_plateau_patience:
            st.plateau = {n: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=scfg.lr_plateau_patience)
                          for n, o in st.optimizers.items()}
        target = model.ema_target(st.name)
        self.ema, self.ema_stage = None, None
        if scfg.ema_decay and target:
            self.ema = EMA(model.get_submodule(target), scfg.ema_decay)
            self.ema_stage, self.ema_stage_target = st.name, target

    def _restore_stage(self, st: StagePlan, ckpt: dict) -> None:
        restore_optimizers(st.optimizers, ckpt)
        if self.ema is not None and ckpt.get("ema"):
            prefix = len(self.ema_stage_target) + 1
            self.ema.load_state_dict({k[prefix:]: v for k, v in ckpt["ema"].items()})
            # checkpoints from before the warm-up: one update per finished step of this stage
            self.ema.updates = int(ckpt["state"].get("ema_updates", self.pos.stage_step))
        if st.plateau and ckpt["state"].get("plateau"):
            for n, s in ckpt["state"]["plateau"].items():
                st.plateau[n].load_state_dict(s)

    def _train_epoch(self, st: StagePlan, epoch: int, advance) -> tuple[dict[str, float], int]:
        """The epoch's remaining batches (from ``pos.batch`` on a resume): summed losses and their count."""
        perm = np.random.default_rng([self.cfg.train.seed, self.pos.stage_index, epoch]).permutation(len(self.train_rows))
        if self.world > 1:
            perm = np.resize(perm, st.per_rank * self.world)[self.rank::self.world]
        sums: dict[str, float] = {}
        count = 0
        for b, batch in iterate_batches(self.ds, self.train_rows, self.train_labels, st.batch_size, self.device, perm, skip=self.pos.batch):
            losses, stop = self._train_step(st, batch)
            self.pos.batch = b + 1
            self.pos.step += 1
            self.pos.stage_step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
            self._log_step(st, epoch, losses)
            advance(1, info=" ".join(f"{k}={float(v):.4g}" for k, v in list(losses.items())[:3]))
            if stop or st.at_max_steps(self.pos.stage_step):
                break
        return sums, count

    def _train_step(self, st: StagePlan, batch: dict) -> tuple[dict, bool]:
        """One ``training_step`` with the divergence guard and the EMA update: (losses, stop requested)."""
        ctx = st.ctx
        ctx.step = self.pos.step
        ctx.nonfinite = 0
        if st.cfg.lr_schedule != "constant":
            set_rates(st.optimizers, st.base_lrs, lr_factor(st.cfg.lr_schedule, self.pos.stage_step, st.total))
        losses = self.model.training_step(batch, st.name, ctx)
        stop = self._stop_requested
        if self.world > 1:
            dist.broadcast_module(self.model, params=False)  # e.g. BatchNorm statistics: rank 0's, as in DDP
            # one all-reduce: the logged losses are means over the ranks, and a Ctrl-C seen by any
            # rank stops all of them at the same step
            means = dist.mean_values([float(v) for v in losses.values()] + [float(stop)])
            losses, stop = dict(zip(losses, means[:-1])), means[-1] > 0
        st.consecutive_bad = st.consecutive_bad + 1 if ctx.nonfinite else 0
        if st.consecutive_bad >= st.cfg.max_nonfinite:
            self.save(f"step-{self.pos.step:08d}", st.optimizers)
            raise TrainingDiverged(
                f"stage {st.name}: {st.consecutive_bad} non-finite losses in a row at step {self.pos.step}; "
                f"stopped (last good weights in {self.run.checkpoints}). Try a lower train.lr or train.grad_clip")
        if self.ema is not None and not ctx.nonfinite:
            self.ema.update()
        return losses, stop

    def _log_step(self, st: StagePlan, epoch: int, losses: dict) -> None:
        if self.pos.step % self.cfg.train.log_every == 0 or self.pos.stage_step == 1:
            rec = {"stage": st.name, "epoch": epoch, "step": self.pos.step, **{k: float(v) for k, v in losses.items()}}
            if st.ctx.nonfinite:
                rec["skipped_nonfinite"] = st.ctx.nonfinite
            if st.cfg.lr_schedule != "constant":  # the rate this step ran at (epoch records carry it always)
                rec["lr"] = next(iter(st.optimizers.values())).param_groups[0]["lr"]
            self._log(rec)
            for k, v in losses.items():
                self.writer.add_scalar(f"{st.name}/{k}", float(v), self.pos.step)

    def _end_epoch(self, st: StagePlan, epoch: int, sums: dict[str, float], count: int) -> bool:
        """Log the epoch, validate when due, write a step checkpoint when due; True when the stage stops."""
        scfg = st.cfg
        epoch_done = self.pos.batch >= st.batches_per_epoch
        check_finite_weights(self.model, st.name, self.pos.step, self.run.checkpoints)  # before this epoch's checkpoint
        means = {f"train_{k}": v / max(count, 1) for k, v in sums.items()}
        rec = {"stage": st.name, "epoch": epoch, "step": self.pos.step, "event": "epoch", "seconds": round(time.time() - st.started, 2), **means}
        if not epoch_done:
            rec["partial"] = True
        stop_early = False
        if epoch_done and (epoch + 1) % scfg.val_every == 0 and len(self.val_rows):
            stop_early = self._validate_epoch(st, rec)
        rec["lr"] = next(iter(st.optimizers.values())).param_groups[0]["lr"]
        self._log(rec)
        if epoch_done:
            self.pos.epoch, self.pos.batch = epoch + 1, 0
        stopping = dist.any_rank(self._stop_requested)
        stage_stops = stop_early or st.at_max_steps(self.pos.stage_step)
        if self._step_checkpoint_due(forced=stopping or stage_stops or epoch + 1 >= st.epochs):
            self._save_step_checkpoint(st)
        if stopping:
            raise KeyboardInterrupt
        if stop_early:
            console().print(f"stage {st.name}: early stopping after epoch {epoch + 1} (no improvement for {st.since_best} validations)")
        return stage_stops

    def _validate_epoch(self, st: StagePlan, rec: dict) -> bool:
        """Validate, step the LR plateau schedulers, keep the best checkpoint; True when early stopping is due."""
        st.last_val = self.validate(st.name, st.batch_size)
        rec.update({f"val_{k}": v for k, v in st.last_val.items()})
        key = next(iter(st.last_val))
        for k, v in st.last_val.items():
            self.writer.add_scalar(f"{st.name}/val_{k}", v, self.pos.step)
        if st.plateau:
            for p in st.plateau.values():
                p.step(st.last_val[key])
        if st.last_val[key] < self.best.get(st.name, float("inf")):
            self.best[st.name] = st.last_val[key]
            st.since_best = 0
            self.save(f"best-{st.name}", st.optimizers, {"val": st.last_val})
            return False
        st.since_best += 1
        return bool(st.cfg.early_stopping_patience and st.since_best >= st.cfg.early_stopping_patience)

    def _save_step_checkpoint(self, st: StagePlan) -> None:
        extra = {"since_best": st.since_best}
        if st.plateau:
            extra["plateau"] = {n: p.state_dict() for n, p in st.plateau.items()}
        started = time.perf_counter()
        self.save(f"step-{self.pos.step:08d}", st.optimizers, extra)
        done = time.perf_counter()
        self._last_checkpoint = (done - started, done)

    def _finish_stage(self, st: StagePlan) -> dict:
        best_dir = self.run.checkpoints / f"best-{st.name}"
        if st.cfg.early_stopping_patience and dist.broadcast_object(self.main and best_dir.exists()):
            # restore the best weights (S003: early stopping with restore_best_weights); rank 0 reads
            # them and sends them, as other nodes may not see its disk
            if self.main:
                self.model.load_state_dict(load_checkpoint(best_dir, self.device)["model"])
            dist.broadcast_module(self.model)
        if self.ema is not None:
            # from here on (next stages, sampling) the EMA weights are the model's weights
            self.model.get_submodule(self.ema_stage_target).load_state_dict(self.ema.state_dict())
        return {"steps": self.pos.stage_step, "seconds": round(time.time() - st.started, 1), "val": st.last_val,
                "batch_size": st.batch_size, "processes": self.world, "effective_batch_size": st.batch_size * self.world}

    @torch.no_grad()
    def validate(self, stage: str, bs: int) -> dict[str, float]:
        """Mean validation metrics. Each rank scores its share of the items; the sums are then
        gathered and added in rank order, so every rank gets the very same numbers (and takes the
        same early-stopping and LR decisions)."""
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        gen_state = self.generator.get_state()
        torch_state = torch.get_rng_state()
        share = slice(self.rank, None, self.world)
        for _, batch in iterate_batches(self.ds, self.val_rows[share], self.val_labels[share], bs, self.device):
            out = self.model.validation_step(batch, stage)
            k = len(batch["image"])
            for key, v in out.items():
                sums[key] = sums.get(key, 0.0) + float(v) * k
            n += k
        if self.world > 1:
            parts = dist.all_gather_object((sums, n))
            sums, n = {}, 0
            for part_sums, part_n in parts:
                for key, v in part_sums.items():
                    sums[key] = sums.get(key, 0.0) + v
                n += part_n
        # validation must not shift the training randomness (resume equivalence)
        self.generator.set_state(gen_state)
        torch.set_rng_state(torch_state)
        self.model.train()
        return {k: v / max(n, 1) for k, v in sums.items()}


class _NoWriter:
    """TensorBoard writer of ranks > 0: only rank 0 writes logs."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass
