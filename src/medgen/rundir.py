"""The run directory contract (DESIGN.md): one folder per run holds everything about it.

    config.yaml   the full resolved config, replayable with `medgen train RUN/config.yaml`
    data.json     which prepared dataset, split and subset, with its content hash
    checkpoints/  weights (safetensors) + JSON state, atomic writes
    logs/         TensorBoard events + metrics.jsonl (one JSON line per step/epoch)
    samples/      generated images, grid PNG, histograms
    metrics.json  every evaluation result with the settings that produced it
    report.html   the self-contained report
    status.json   state (running / finished / failed / interrupted), pid, times
    .lock         held by the process writing the run while its status is "running"

One writer at a time: the process that sets the status to "running" holds ``.lock`` (an flock
the kernel drops when the process ends, however it ends) until it sets another state, so a
second ``train --resume`` or a ``--force`` replacement of a live run is refused with the pid.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from medgen.errors import UserError
from medgen.fsio import HeldLock, acquire_lock, atomic_write_json, atomic_write_text, lock_holder, read_json

_HELD: dict[Path, HeldLock] = {}  # run roots whose lock this process holds (RunDir objects come and go)


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # paths
    config_path = property(lambda self: self.root / "config.yaml")
    data_path = property(lambda self: self.root / "data.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    logs = property(lambda self: self.root / "logs")
    samples = property(lambda self: self.root / "samples")
    metrics_path = property(lambda self: self.root / "metrics.json")
    report_path = property(lambda self: self.root / "report.html")
    status_path = property(lambda self: self.root / "status.json")

    @classmethod
    def create(cls, root: str | Path, force: bool = False) -> "RunDir":
        """A new, empty run directory; an existing non-empty one needs ``force`` (it is then replaced)."""
        run = cls(root)
        if run.root.exists() and (run.root.is_file() or any(run.root.iterdir())):
            if not force:
                raise UserError("run directory already exists; use --resume to continue it or --force to replace it", run.root)
            if run.root.is_file():
                raise UserError("run path is a file", run.root)
            run.check_not_running()
            shutil.rmtree(run.root)
        try:
            for d in (run.root, run.checkpoints, run.logs, run.samples):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create run directory ({err.strerror})", run.root) from None
        if not os.access(run.root, os.W_OK):
            raise UserError("run directory is not writable", run.root)
        return run

    @classmethod
    def open(cls, root: str | Path) -> "RunDir":
        run = cls(root)
        if not run.config_path.exists():
            raise UserError("not a medgen run directory (no config.yaml)", run.root)
        return run

    def exists(self) -> bool:
        return self.config_path.exists()

    def config(self):
        from medgen.config import resolve

        return resolve(str(self.config_path))

    def config_mapping(self) -> dict:
        """config.yaml as a plain mapping, read safely: a hand-edited file with a Python tag or bad
        YAML is a one-line UserError, as every command gives."""
        from medgen.fsio import load_yaml_text

        return load_yaml_text(self.config_path.read_text(errors="replace"), self.config_path)

    def write_config(self, cfg) -> None:
        atomic_write_text(self.config_path, cfg.to_yaml())

    def write_data(self, info: dict) -> None:
        atomic_write_json(self.data_path, info)

    def data(self) -> dict:
        return read_json(self.data_path, {})

    def metrics(self) -> dict:
        return read_json(self.metrics_path, {})

    def update_metrics(self, section: str, values: dict) -> None:
        """Merge one section into metrics.json (other sections are kept)."""
        metrics = self.metrics()
        metrics[section] = values
        atomic_write_json(self.metrics_path, metrics)

    def log(self, record: dict) -> None:
        """Append one line to logs/metrics.jsonl (flushed, so a crash loses at most this line)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}, default=float) + "\n")
            f.flush()

    def read_log(self) -> list[dict]:
        path = self.logs / "metrics.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        return out

    lock_path = property(lambda self: self.root / ".lock")

    def check_not_running(self) -> None:
        """UserError naming the pid when another live process is writing this run."""
        pid = lock_holder(self.lock_path)
        if pid is not None and self.root.resolve() not in _HELD:
            raise UserError(f"this run is being written by another medgen process (pid {pid}); "
                            "wait for it to end or stop it first", self.root)

    def lock(self) -> None:
        """Become the run's one writer (idempotent), or UserError naming the writer's pid."""
        key = self.root.resolve()
        if key not in _HELD:
            self.check_not_running()
            _HELD[key] = acquire_lock(self.lock_path, "this run directory")

    def unlock(self) -> None:
        held = _HELD.pop(self.root.resolve(), None)
        if held is not None:
            held.release()

    def set_status(self, state: str, **extra) -> None:
        """Write status.json; "running" first takes the run's lock, any other state gives it back."""
        if state == "running":
            self.lock()
        status = read_json(self.status_path, {})
        status.update(state=state, pid=os.getpid(), updated=time.time(), **extra)
        status.setdefault("started", time.time())
        try:
            atomic_write_json(self.status_path, status)
        finally:
            if state != "running":
                self.unlock()

    def status(self) -> dict:
        return read_json(self.status_path, {})


def run_root(path: str | Path) -> Path | None:
    """The run directory holding ``path`` (a run, or a checkpoint folder inside one), or None."""
    path = Path(path)
    for p in (path, *path.parents):
        if (p / "config.yaml").exists() and (p / "data.json").exists():
            return p
    return None


def init_chain(run: str | Path, not_a_run: str) -> list[RunDir]:
    """The run and every run it was started from with ``--init-from``, newest first. A link that is
    not a medgen run (weights from elsewhere) is a UserError with the caller's ``not_a_run`` reason:
    what such weights were trained on cannot be told."""
    chain: list[RunDir] = []
    link: Path | None = Path(run)
    while link is not None:
        root = run_root(link)
        if root is None:
            raise UserError(not_a_run, link)
        if any(r.root == root for r in chain):  # a chain that loops back: each run once
            break
        chain.append(RunDir(root))
        link = Path(started["from"]) if (started := chain[-1].data().get("init_from")) else None
    return chain
