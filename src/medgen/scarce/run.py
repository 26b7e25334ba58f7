"""``medgen scarce RUN --class CLASS --k K``: the scarce-class benchmark of a generator run.

The real data is the run's own prepared dataset (its training split, cut to K images of CLASS, and
its full test split); the synthetic CLASS images come from the run (a class-conditional run samples
CLASS; an unconditional run must have been trained on CLASS images only, e.g. the S000 way: a
base run on the other classes, fine-tuned with ``--init-from`` on K images of CLASS). Which images
the run and every run it was initialised from saw is read from their data.json files; the K kept
images include all of them, so no held-back or test image can reach the classifiers through the
synthetic images. Result: ``RUN/scarce/CLASS-K<K>.json`` (never replaced without ``force``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.errors import UserError

__all__ = ["format_scarce_table", "pick_ids", "scarce_benchmark"]


def pick_ids(dataset: str | Path, where: dict, split: str, n: int, seed: int, out: str | Path, force: bool = False) -> list[str]:
    """``n`` ids of the items of ``split`` matching ``where``, drawn at random (seeded), written to ``out``."""
    from medgen.data.dataset import PreparedDataset
    from medgen.fsio import atomic_write_text
    from medgen.scarce.benchmark import _ids

    out = Path(out)
    if out.exists() and not force:
        raise UserError("the file exists; use --force to replace it", out)
    ds = PreparedDataset(dataset)
    rows = ds.select(split, where)
    if n > len(rows):
        raise UserError(f"only {len(rows)} items of split '{split}' match {where}, cannot pick {n}", ds.root)
    ids = sorted(_ids(ds, rows[np.random.default_rng(seed).permutation(len(rows))[:n]]))
    atomic_write_text(out, "\n".join(ids) + "\n")
    return ids


def _same_dataset(a: str, b: str) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def scarce_benchmark(run: str | Path, class_name: str, k: int, *, seeds: int = 5, n_add: int | None = None,
                     sampler: str | None = None, steps: int | None = None, n_resamples: int = 1000, level: float = 0.95,
                     settings=None, force: bool = False, echo=print) -> dict:
    from medgen.data.dataset import PreparedDataset
    from medgen.fsio import atomic_write_json
    from medgen.sampling import generate, load_run_model
    from medgen.scarce.benchmark import _ids, choose_kept, generator_exposure, scarce_class_table

    import torch

    cfg, model, rundir = load_run_model(run)
    out = rundir.root / "scarce" / f"{class_name}-K{k}.json"
    if out.exists() and not force:
        raise UserError("the benchmark result exists; use --force to replace it", out)
    info = rundir.data()
    ds = PreparedDataset(info["dataset"])
    if class_name not in ds.labels:
        raise UserError(f"unknown class '{class_name}'; the dataset's labels: {', '.join(ds.labels)}", ds.root)
    class_id = ds.labels.index(class_name)
    exposure = generator_exposure(rundir.root)
    here = {r: v for r, v in exposure["by_run"].items() if _same_dataset(v["dataset"], str(ds.root))}
    seen = set()
    for r in here:
        sub = PreparedDataset(exposure["by_run"][r]["dataset"])
        where = exposure["by_run"][r]["subset"]
        rows = np.concatenate([sub.select(s, where) for s in exposure["by_run"][r]["splits"] if s])
        seen.update(_ids(sub, rows))
    train_rows, test_rows = ds.select(cfg.data.train_split), ds.select("test")
    if len(test_rows) == 0:
        raise UserError("the dataset has no test split", ds.root)
    y_train = ds.label_ids(train_rows)
    n_class = int((y_train == class_id).sum())
    train_ids = _ids(ds, train_rows)
    choose_kept([train_ids[i] for i in np.flatnonzero(y_train == class_id)], k, sorted(seen))  # refuse before sampling
    n_add = n_class - k if n_add is None else n_add
    conditional = model.conditional
    if not conditional:
        own = exposure["by_run"][str(rundir.root)]
        rows = ds.select(cfg.data.train_split, own["subset"])
        other = sorted(set(np.asarray(ds.index["label"])[rows]) - {class_name})
        if other:
            raise UserError(f"this unconditional run was trained on other classes too ({', '.join(other)}): its samples "
                            f"are not all '{class_name}'; fine-tune it on the class (--subset label={class_name})", rundir.root)
    n_syn = max(n_add, 1)
    echo(f"scarce-class: generating {n_syn} '{class_name}' images from {rundir.root}")
    labels = torch.full((n_syn,), class_id, dtype=torch.long) if conditional else None
    synthetic, _ = generate(model, n_syn, labels, sampler or cfg.sample.sampler, steps or cfg.sample.steps,
                            cfg.sample.guidance, cfg.sample.seed, cfg.sample.batch_size, describe=f"sample {class_name}")
    result = scarce_class_table(
        (np.asarray(ds.images[train_rows]), y_train, train_ids),
        (np.asarray(ds.images[test_rows]), ds.label_ids(test_rows)), synthetic, class_id, ds.labels, k,
        seen_ids=sorted(seen), test_ids=_ids(ds, test_rows), n_add=n_add, seeds=tuple(range(seeds)),
        n_resamples=n_resamples, level=level, settings=settings, echo=echo,
        generator={"run": str(rundir.root), "conditional": conditional, "exposure": exposure["by_run"],
                   "other_datasets_not_checked": sorted({v["dataset"] for r, v in exposure["by_run"].items() if r not in here})})
    result["dataset"] = str(ds.root)
    atomic_write_json(out, result)
    result["path"] = str(out)
    return result


def format_scarce_table(result: dict) -> str:
    level = round(result["level"] * 100)
    lines = [f"scarce class '{result['class']}': K={result['k']} real training images kept, {result['n_add']} added per set, "
             f"seeds {result['seeds']}, {result['n_test']} test images ({result['n_test_class']} of the class); {level} % intervals",
             f"{'training set':16s} " + " ".join(f"{m:>26s}" for m in result["metrics"])]
    for name, row in result["rows"].items():
        lines.append(f"{name:16s} " + " ".join(f"{row[m]['value']:.3f} [{row[m]['low']:.3f}, {row[m]['high']:.3f}]".rjust(26)
                                                for m in result["metrics"]))
    for m, cmp in result["verdicts"].items():
        for what, v in cmp.items():
            lines.append(f"{m}: {what}: {v['difference']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}] -> {v['verdict']} "
                         f"(detectable: {v['smallest_detectable_difference']:.3f}; {result['correction']})")
    lines.append(f"leak check: {result['leak_check']}")
    return "\n".join(lines)
