"""``medgen demo``: the whole journey on the embedded default data, one step after another.

1. prepare the built-in ``mni152`` slices (real anatomy), 2. train the ``demo-brain-ldm``
preset (small profile: a few CPU minutes), 3. sample a class-conditional grid, 4. evaluate,
5. write the report. When the package ships the pretrained demo checkpoint (trained with
medgen itself, same networks, longer: ``--profile pretrain``), its samples are shown beside
the few-minute model's, each labelled for what it is.

Each step reuses its output when an earlier demo finished it, and an interrupted training is
resumed, so running the demo again picks up where it stopped; ``--force`` starts from scratch.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from medgen.data.dataset import PreparedDataset
from medgen.errors import UserError

DEMO_SOURCE = "builtin:mni152"
DEMO_PRESET = "demo-brain-ldm"
ASSET_DIR = Path(__file__).parent / "assets" / "demo-brain-ldm"


def _step(echo, n: int, text: str) -> float:
    echo(f"[{n}] {text}")
    return time.time()


def export_pretrained(run_dir: str | Path, dest: str | Path = ASSET_DIR) -> Path:
    """Write a finished demo run as the shipped checkpoint: EMA weights folded into the model's,
    stored as float16 safetensors (half the size; sampling casts back to float32), plus the run's
    config and data description, with the source, seed and content hash of its training data (so
    the demo refuses it for data it has seen). How the shipped file was made, on data drawn with
    another seed than the demo's (seed 0), so that none of the demo's images is in its training set:
    ``medgen data prepare --source builtin:mni152 --n 2400 --size 64 64 --seed 1 --out DATA``,
    ``medgen train demo-brain-ldm --profile pretrain --data DATA --out RUN``, then
    ``python -m medgen.demo export RUN``. A run trained further from another with ``--init-from``
    ships the commands of the whole chain and the steps of all its runs."""
    import json

    from safetensors.torch import save_file

    from medgen.rundir import RunDir
    from medgen.sampling import load_run_model

    run = RunDir.open(run_dir)
    status = run.status()
    if status.get("state") != "finished":
        raise UserError("the run has not finished training; export a finished run", run.root)
    cfg = run.config()
    if cfg.preset != DEMO_PRESET:
        raise UserError(f"not a {DEMO_PRESET} run (preset: {cfg.preset})", run.root)
    info = json.loads((run.root / "data.json").read_text())
    stats = PreparedDataset(info.pop("dataset")).stats  # a path on the machine that trained it; must still be there
    # what install_pretrained needs to refuse a dataset this checkpoint has seen (its test images would be in training)
    info["trained_on"] = {k: stats.get(k) for k in ("source", "seed", "n", "content_hash")}
    chain = _training_chain(run, stats)
    info["steps"] = sum(steps for _, steps in chain)
    # the trainer's own paths mean nothing on a user's machine: the commands name DATA and RUN1, RUN2, ...
    names = [f"RUN{i + 1}" for i in range(len(chain) - 1)] + ["RUN"]
    info["command"] = " && ".join(_portable_command(cmd, names[i], names[i - 1] if i else None)
                                  for i, (cmd, _) in enumerate(chain)) or None
    info["init_from"] = None  # a path of the training machine; the chain of commands above says it
    _, model, _ = load_run_model(run.root, device="cpu", checkpoint="final")  # the EMA weights, as sampling uses them
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    save_file(half, str(dest / "model.safetensors"), metadata={"source": "medgen demo-brain-ldm", "profile": str(cfg.profile)})
    cfg.data.path = None  # like the command's paths: install_pretrained sets the user's dataset
    (dest / "config.yaml").write_text(cfg.to_yaml())
    (dest / "data.json").write_text(json.dumps(info, indent=2))
    return dest / "model.safetensors"


def _training_chain(run, stats: dict) -> list[tuple[str, int]]:
    """(command, steps) of each run that made this one, oldest first: a run started with --init-from
    continues the run it names, so the shipped checkpoint's command is the whole chain. Every run of
    the chain must have trained on the same data, or ``trained_on`` would not cover what it has seen."""
    from medgen.rundir import init_chain

    chain = init_chain(run.root, "it was started (--init-from) from weights that are not a medgen run: "
                                 "what the shipped checkpoint was trained on could not be told")
    for source in chain[1:]:
        if PreparedDataset(source.data()["dataset"]).stats.get("content_hash") != stats.get("content_hash"):
            raise UserError("it was started (--init-from) from a run trained on other data; the shipped "
                            "checkpoint records one training set, so train the whole chain on one", source.root)
    return [(r.data().get("command") or "", int(r.status().get("steps") or 0)) for r in reversed(chain)]


def _portable_command(command: str, out: str, init_from: str | None) -> str:
    command = re.sub(r"--out \S+", f"--out {out}", re.sub(r"--data \S+", "--data DATA", command))
    return re.sub(r"--init-from \S+", f"--init-from {init_from}", command) if init_from else command


def trained_on_this(trained_on: dict | None, stats: dict) -> bool:
    """Whether a checkpoint trained on ``trained_on`` (source, seed, content hash of its training data)
    has seen images of the dataset described by ``stats`` (its stats.json): the same content, or the
    same built-in source drawn with the same seed (a built-in item depends only on the seed and its
    index, so two sizes share their first items). Then that dataset's test split is no test for it."""
    if not trained_on:
        return False
    if trained_on.get("content_hash") and trained_on["content_hash"] == stats.get("content_hash"):
        return True
    source = trained_on.get("source") or ""
    return source.startswith("builtin:") and source == stats.get("source") and trained_on.get("seed") == stats.get("seed")


def install_pretrained(run_dir: Path, dataset: Path, asset_dir: Path = ASSET_DIR) -> Path | None:
    """A run directory for the shipped pretrained checkpoint (safetensors only), pointing at ``dataset``;
    None when none is shipped, or when it was trained on ``dataset``'s images (``trained_on_this``)."""
    import json

    from medgen.config import resolve
    from medgen.fsio import atomic_write_json
    from medgen.rundir import RunDir

    asset_dir = Path(asset_dir)
    if not (asset_dir / "model.safetensors").exists():
        return None
    info = json.loads((asset_dir / "data.json").read_text())
    if trained_on_this(info.get("trained_on"), PreparedDataset(dataset).stats):
        return None
    if (run_dir / "checkpoints" / "final" / "model.safetensors").exists():
        return run_dir
    (run_dir / "checkpoints" / "final").mkdir(parents=True, exist_ok=True)
    (run_dir / "samples").mkdir(exist_ok=True)
    run = RunDir(run_dir)
    cfg = resolve(str(asset_dir / "config.yaml"))
    cfg.data.path = info["dataset"] = str(Path(dataset).resolve())  # config and data.json name the same data
    run.write_config(cfg)
    run.write_data(info)
    shutil.copy(asset_dir / "model.safetensors", run_dir / "checkpoints" / "final" / "model.safetensors")
    atomic_write_json(run_dir / "checkpoints" / "final" / "state.json", {"pretrained": True, "finished": True})
    atomic_write_json(run_dir / "status.json", {"state": "finished", "steps": info.get("steps"), "pretrained": True})
    return run_dir


def run_demo(out: str | Path = "demo-output", force: bool = False, echo=print, profile: str = "small",
             n_images: int | None = None) -> dict:
    from medgen.data.inspect import inspect_dataset
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.rundir import RunDir
    from medgen.sampling import sample
    from medgen.training import latest_checkpoint, train

    t_start = time.time()
    out = Path(out)
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir, run_dir = out / "data", out / "runs" / "demo-small"
    result: dict = {}

    t = _step(echo, 1, f"data: {DEMO_SOURCE} (real MNI152 template slices, augmented) -> {data_dir}")
    if (data_dir / "stats.json").exists():
        echo("    reusing the prepared data")
    else:
        from medgen.data.sources import SourceOptions

        prepare(DEMO_SOURCE, data_dir, PrepareOptions(source=SourceOptions(n=n_images)), force=True)
    info = inspect_dataset(data_dir)
    echo(f"    {info['n']} images {tuple(info['shape'])}; " + "; ".join(
        f"{s}: {sum(info['counts'][s].values())}" for s in ("train", "val", "test")) + f"  ({time.time() - t:.0f} s)")
    echo(f"    preview: {info['preview']}")
    result["preview"] = info["preview"]

    t = _step(echo, 2, f"train: preset {DEMO_PRESET} ({profile} profile: autoencoder, then latent diffusion) -> {run_dir}")
    run = RunDir(run_dir)
    status = run.status().get("state") if run.exists() else None
    if status == "finished":
        echo("    reusing the finished run")
    elif run.exists() and latest_checkpoint(run) is not None:
        echo("    resuming the interrupted run")
        train(None, None, run_dir, resume=True, echo=lambda m: echo("    " + m))
    else:
        train(DEMO_PRESET, data_dir, run_dir, profile=profile, force=True, echo=lambda m: echo("    " + m))
    echo(f"    ({time.time() - t:.0f} s)")

    runs = [(run_dir, "trained by this demo (a few CPU minutes)")]
    pre = install_pretrained(out / "runs" / "demo-pretrained", data_dir) if profile != "tiny" else None
    if pre is None and profile != "tiny" and (ASSET_DIR / "model.safetensors").exists():
        echo("    the shipped pretrained checkpoint is not shown: it was trained on this data's images")
    if pre is not None:
        runs.append((pre, "pretrained checkpoint shipped with medgen (same networks, trained longer with --profile pretrain)"))

    steps = 50 if profile != "tiny" else 5
    t = _step(echo, 3, f"sample: 8 images per class (axial, coronal, sagittal), DDIM {steps} steps, guidance 2")
    grids = []
    for rd, what in runs:
        folder = rd / "samples" / "demo"
        if not (folder / "grid.png").exists():
            sample(rd, n=24, sampler="ddim", steps=steps, guidance=2.0, seed=0, out=folder, force=True, echo=lambda m: None)
        grids.append(folder / "grid.png")
        echo(f"    {what}: {folder / 'grid.png'}")
    echo(f"    ({time.time() - t:.0f} s)")
    result["grids"] = [str(g) for g in grids]

    t = _step(echo, 4, "evaluate: fidelity and memorisation against the test split")
    try:
        from medgen.evaluation import evaluate
    except ImportError:
        evaluate = None
    if evaluate is None:
        echo("    (evaluation is not available in this version)")
    else:
        for rd, _ in runs:
            if "evaluation" not in RunDir(rd).metrics():
                evaluate(run=rd, metrics=["distribution", "fidelity", "sensitivity", "intensity", "memorisation"], n=60, sweep=[], echo=lambda m: None)
            summary = RunDir(rd).metrics().get("evaluation", {}).get("summary", {})
            if summary:
                echo("    " + ", ".join(f"{k}={v:.4g}" for k, v in list(summary.items())[:6] if isinstance(v, (int, float))))
        echo(f"    ({time.time() - t:.0f} s)")

    t = _step(echo, 5, "report")
    from medgen.report import write_report

    reports = [write_report(rd) for rd, _ in runs]
    for (rd, what), rep in zip(runs, reports):
        echo(f"    {what}: {rep}")
    result["reports"] = [str(r) for r in reports]
    echo(f"done in {time.time() - t_start:.0f} s. Open the report: {reports[-1] if len(reports) > 1 else reports[0]}")
    if not Path(result["preview"]).exists():
        raise UserError("the preview was not written", result["preview"])
    return result


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "export":
        sys.exit("usage: python -m medgen.demo export RUN   (writes src/medgen/assets/demo-brain-ldm/)")
    print(export_pretrained(sys.argv[2]))
