"""``medgen.train``: resolve the config, open the data, build the model, run the trainer."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from medgen.config import Config, resolve
from medgen.data.dataset import PreparedDataset
from medgen.errors import UserError
from medgen.models.base import DataInfo, build_model
from medgen.rundir import RunDir


def latest_checkpoint(run: RunDir) -> Path | None:
    final = run.checkpoints / "final"
    if final.exists():
        return final
    steps = sorted(p for p in run.checkpoints.glob("step-*") if (p / "model.safetensors").exists())
    return steps[-1] if steps else None


def parse_subset(items: list[str] | None) -> dict[str, str]:
    """COLUMN=VALUE items -> {column: value}; VALUE may be a|b, or @FILE: the values listed in FILE, one a line."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UserError(f"bad --subset '{item}': expected COLUMN=VALUE, e.g. label=beta (VALUE may be a|b or @FILE)")
        value = value.strip()
        if value.startswith("@"):
            path = Path(value[1:])
            try:
                values = [v.strip() for v in path.read_text().splitlines() if v.strip()]
            except OSError as err:
                raise UserError(f"cannot read the --subset values ({err.strerror})", path) from None
            if not values:
                raise UserError("the --subset values file is empty", path)
            value = "|".join(values)
        out[key.strip()] = value
    return out


def load_init_weights(model, source: str | Path, family: str | None = None) -> dict:
    """Start from another run's weights (fine-tuning). Tensors whose shapes differ are skipped and listed.
    A family with ``init_from_families`` (``family``: this run's) refuses a source of another family
    before anything loads, and checks the source further in ``on_init_from``."""
    from medgen.engine.checkpoint import load_checkpoint

    src = Path(source)
    if (src / "config.yaml").exists():
        ckpt_dir = latest_checkpoint(RunDir(src))
        if ckpt_dir is None:
            raise UserError("--init-from run has no checkpoint yet", src)
    else:
        ckpt_dir = src
    ckpt = load_checkpoint(ckpt_dir)
    if model.init_from_families:
        source_run = _run_of(src)
        source_family = source_run.config().model.family if source_run else ckpt["state"].get("family")
        if source_family not in model.init_from_families:
            what = f"a '{source_family}' run" if source_family else "a checkpoint of unknown family"
            raise UserError(f"--init-from: {what}; family '{family}' starts from a trained "
                            f"{' or '.join(model.init_from_families)} run", src)
    weights = ckpt["model"]
    own = model.state_dict()
    usable = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(k for k in weights if k not in usable)
    missing = sorted(k for k in own if k not in usable)
    model.load_state_dict(usable, strict=False)
    report = {"from": str(ckpt_dir), "loaded": len(usable), "skipped": skipped, "not_initialised": missing}
    if model.init_from_families:  # before the generic message: the family can say which setting differs
        model.on_init_from(_init_source(source_run, src, source_family, report))
    if not usable:
        raise UserError(f"--init-from: no weights of {ckpt_dir} fit this model (is it the same family and size?)", src)
    return report


def _run_of(src: Path) -> RunDir | None:
    """The run directory behind an --init-from path: the run itself, or a checkpoint folder inside one."""
    root = src.parent.parent if src.parent.name == "checkpoints" else src
    return RunDir(root) if (root / "config.yaml").exists() else None


def _init_source(run: RunDir | None, src: Path, family: str | None, report: dict):
    from medgen.models.base import InitSource
    from medgen.models.registry import validate_params

    if run is None:
        return InitSource(str(src), family, None, None, None, report)
    cfg = run.config()
    info = run.data().get("info")
    params = validate_params(cfg.model.family, cfg.model.params())
    return InitSource(str(run.root), family, params, cfg.model.spatial_dims, DataInfo.from_json(info) if info else None, report)


def space_needed(model, cfg, resume: bool = False) -> int:
    """Bytes a run may take on disk, estimated before it starts. A checkpoint holds the weights,
    the EMA copy and the optimiser state (Adam: two moments), so about 4x the weights; a run keeps
    the last ``keep_last`` step checkpoints (+1 while the next is written), one best-* per stage
    and final. A resumed run replaces checkpoints that already exist, so it needs room for one
    more. Plus a margin for logs, TensorBoard events and samples."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    folders = 2 if resume else cfg.train.keep_last + 1 + len(model.stages) + 1
    return 4 * weights * folders + 64 * 2**20


def _write_error(err: OSError, run: RunDir, out: Path) -> UserError:
    ckpt = latest_checkpoint(run)
    intact = (f"the last complete checkpoint, {ckpt}, is intact (checkpoints are written to a temporary folder "
              f"and renamed, never half-written); free space or fix the permissions, then continue with: "
              f"medgen train --resume --out {out}") if ckpt else "no checkpoint had been written yet"
    return UserError(f"cannot write ({os.strerror(err.errno)}); training stopped; {intact}", err.filename or run.root)


def train(config: str | Config, data: str | Path | None, out: str | Path, *, profile: str | None = None,
          overrides: list[str] | None = None, init_from: str | Path | None = None, subset: list[str] | None = None,
          resume: bool = False, force: bool = False, echo=print) -> dict:
    """Train a preset or config on a prepared dataset into run directory ``out``.

    Started by ``torchrun`` with several processes, it trains data-parallel (see
    ``medgen.engine.distributed``); only rank 0 writes the run directory."""
    from medgen.engine import distributed as dist

    try:
        return _train(config, data, Path(out), profile=profile, overrides=overrides, init_from=init_from, subset=subset,
                      resume=resume, force=force, echo=echo)
    finally:
        dist.cleanup()


def _train(config, data, out: Path, *, profile, overrides, init_from, subset, resume, force, echo) -> dict:
    from medgen.engine import distributed as dist
    from medgen.engine.speed import check_speed_options
    from medgen.engine.context import pick_device
    from medgen.engine.trainer import Trainer
    from medgen.fsio import WRITE_ERRNOS, check_free_space

    if resume:
        if force:
            raise UserError("--resume and --force contradict each other")
        run = RunDir.open(out)
        cfg = run.config()
        from medgen.validation import check_resume_flags

        check_resume_flags(run, cfg, config, profile, overrides, subset, init_from, data)  # the same flags again are fine
        info_json = run.data()
        data = data or info_json.get("dataset")
        ckpt = latest_checkpoint(run)
        if ckpt is not None and ckpt.name == "final":
            echo(f"{out}: already finished; nothing to resume")
            return {"run": str(out), "resumed": False, "finished": True}
    else:
        cfg = config if isinstance(config, Config) else resolve(str(config), profile, overrides)
        ckpt = None
    device = dist.init(pick_device(cfg.train.device))
    check_speed_options(cfg.train, device)  # before a run directory exists
    if not dist.is_main():  # one voice: ranks > 0 print nothing (errors excepted)
        from medgen.progress import set_quiet

        set_quiet(True)
        echo = lambda *a, **k: None  # noqa: E731
    data = data or cfg.data.path
    if not data:
        hint = f" (e.g. medgen data prepare --source builtin:{cfg.data.builtin} --out data/{cfg.data.builtin})" if cfg.data.builtin else ""
        raise UserError(f"no data: give --data DIR, a dataset prepared with 'medgen data prepare'{hint}")
    ds = PreparedDataset(data)
    where = {**cfg.data.subset, **parse_subset(subset)}
    if not resume:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": str(Path(data).resolve()), "subset": where})})
    if ds.spatial_dims != cfg.model.spatial_dims:
        raise UserError(f"the data is {ds.spatial_dims}D but model.spatial_dims is {cfg.model.spatial_dims} "
                        f"(prepare with --size {'D H W' if cfg.model.spatial_dims == 3 else 'H W'}, or --set model.spatial_dims={ds.spatial_dims})", data)
    train_rows = ds.select(cfg.data.train_split, where)
    val_rows = ds.select(cfg.data.val_split, where)
    if len(train_rows) == 0:
        from medgen.validation import no_training_items

        raise no_training_items(ds, cfg.data.train_split, where, data)
    info = DataInfo(ds.spatial_dims, ds.channels, ds.size, ds.labels)
    from medgen.engine.rng import seed_everything

    seed_everything(cfg.train.seed)  # the initial weights depend on the seed alone
    model = build_model(cfg, info)
    if model.init_from_families and not resume and not init_from:
        raise UserError(f"family '{cfg.model.family}' trains on top of a trained {' or '.join(model.init_from_families)} run: "
                        "give it with --init-from RUN")
    run = RunDir(out)  # only rank 0 writes into it

    def setup_run_dir():
        """Rank 0: check the space, create the run directory and write what a new run starts with;
        a failure removes a directory this call created, so none is left half-written."""
        check_free_space(out, space_needed(model, cfg, resume), "this run's checkpoints and logs")
        if resume:
            return None
        RunDir.create(out, force=force)
        try:
            report = load_init_weights(model, init_from, cfg.model.family) if init_from else None
            run.write_config(cfg)
            run.write_data({
                "dataset": str(Path(data).resolve()), "content_hash": ds.stats.get("content_hash"), "subset": where,
                "train_split": cfg.data.train_split, "val_split": cfg.data.val_split, "n_train": int(len(train_rows)),
                "n_val": int(len(val_rows)), "info": info.to_json(), "normalize": ds.stats.get("normalize"),
                "init_from": report, "command": " ".join(["medgen", *sys.argv[1:]]) if sys.argv else "",
            })
        except BaseException as err:
            import shutil

            shutil.rmtree(out, ignore_errors=True)
            if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
                raise UserError(f"cannot write the run directory ({os.strerror(err.errno)})", err.filename or out) from None
            raise
        return report

    # the initial weights reach the other ranks with the trainer's broadcast from rank 0
    init_report = dist.on_main(setup_run_dir)
    if init_report:
        echo(f"initialised {init_report['loaded']} tensors from {init_report['from']}"
             + (f"; {len(init_report['skipped'])} skipped (shape differs)" if init_report["skipped"] else ""))
    world = dist.world_size()
    # stages may set their own batch size (LDM: autoencoder, then diffusion), so report it per stage
    batches = {stage: cfg.stage(stage).batch_size for stage in model.stages}
    effective = {stage: b * world for stage, b in batches.items()}
    n_params = sum(p.numel() for p in model.parameters())
    echo(f"{cfg.model.family} ({n_params / 1e6:.2f} M parameters) on {device}; {len(train_rows)} training / {len(val_rows)} validation items"
         + (f", subset {where}" if where else "")
         + (f"; {world} processes ({dist.backend()}), effective batch "
            + ", ".join(f"{s} {effective[s]} ({batches[s]} per process)" for s in batches) if world > 1 else ""))
    for note in model.notes():
        echo(f"note: {note}")
    trainer = Trainer(model, cfg, ds, run, train_rows, val_rows, device)
    parallel = {"processes": world,
                "effective_batch_size": next(iter(effective.values())) if len(effective) == 1 else effective}
    if dist.is_main():
        run.set_status("running", resumable=True, **parallel)
    try:
        summary = trainer.fit(resume_ckpt=ckpt)
        if dist.is_main():
            from medgen.engine.guards import output_follows_input

            warnings = output_follows_input(model, ds, val_rows if len(val_rows) > 1 else train_rows, run.read_log(), device)
            for w in warnings:
                echo(f"WARNING: {w}")
            run.set_status("finished", resumable=False, steps=trainer.pos.step, warnings=warnings)
            run.update_metrics("training", {"stages": summary, "steps": trainer.pos.step, **parallel,
                                            "speed_options": trainer.speed_options})
    except KeyboardInterrupt:
        if dist.is_main():
            run.set_status("interrupted", resumable=True)
        echo(f"interrupted: checkpoint saved; continue with: medgen train --resume --out {out}")
        raise
    except BaseException as err:
        write_failed = isinstance(err, OSError) and err.errno in WRITE_ERRNOS
        if dist.is_main():
            try:
                run.set_status("failed", error=f"{err.__class__.__name__}: {err}", resumable=latest_checkpoint(run) is not None)
            except OSError:
                if not write_failed:
                    raise
        if write_failed:
            raise _write_error(err, run, out) from None
        raise
    echo(f"finished: {out}")
    return {"run": str(out), "summary": summary}
