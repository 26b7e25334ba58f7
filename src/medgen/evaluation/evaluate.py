"""``medgen.evaluate``: compare synthetic with real images and write the results with their settings.

Two modes:

* a RUN: the run's synthetic images (generated here with :func:`medgen.sampling.generate`, seed and
  sampler/steps from the run's ``sample`` config, cached in ``RUN/evaluation/cache/``) against the
  TEST split of the run's dataset restricted to the run's subset; the TRAIN split is the reference
  of the memorisation audit and of the utility table. Results: ``RUN/metrics.json`` (section
  ``evaluation``) and figures in ``RUN/evaluation/``.
* two image sets (``real``/``fake``): folders of image files, prepared datasets (``DIR`` or
  ``DIR@split``; a real dataset defaults to its test split, a fake one to all its items) or, from
  Python, arrays (N, C, *spatial) in [0, 1] (read by :func:`medgen.data.imageset.load_image_set`).
  Results: ``OUT/metrics.json`` (default ``./evaluation``) and figures in ``OUT``.

The metric groups are registered modules (:mod:`medgen.evaluation.groups`); this module only
chooses the image sets, runs the groups and writes what they return. Every section records the
settings that produced it.
"""
from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen import samplers
from medgen.data.imageset import ImageSet, load_image_set, rows_set
from medgen.errors import UserError
from medgen.evaluation.generation import checkpoint_fingerprint, generate_cached, parse_sweep, proportional, setting_name
from medgen.evaluation.groups import Context, RunInputs, all_groups, get_group, parse_groups
from medgen.evaluation.groups.base import FeatureCache
from medgen.evaluation.sweep_figure import sweep_figure
from medgen.evaluation.tables import summary_tables
from medgen.fsio import output_folder_lock

__all__ = ["ImageSet", "evaluate", "load_image_set", "parse_sweep", "summary", "summary_tables"]

DEFAULT_SET_GROUPS = ("fidelity", "distribution", "sensitivity", "intensity", "memorisation")


@dataclass
class _RealSide:
    """The real images of an evaluation and the dataset splits around them."""

    real: ImageSet
    target: tuple[int, ...]
    train: ImageSet | None = None
    test: ImageSet | None = None
    memorisation_sets: tuple | None = None
    test_ids: np.ndarray | None = None  # label ids the synthetic set is generated in proportion to
    dataset: Any = None
    data: dict = field(default_factory=dict)  # the run's data.json


# ----------------------------------------------------------------------------------------------
# the real side


def _run_real_side(run_dir, model, real: Any, resize: bool, notes: list[str]) -> _RealSide:
    from medgen.data.dataset import PreparedDataset

    data = run_dir.data()
    if not data.get("dataset"):
        raise UserError("run has no data.json naming its dataset", run_dir.root)
    ds = PreparedDataset(data["dataset"])
    subset = data.get("subset") or {}
    train_split = data.get("train_split", "train")
    train_rows = ds.select(train_split, subset)
    test_rows = ds.select("test", subset)
    real_split = "test"
    if len(test_rows) < 2:
        real_split = data.get("val_split", "val")
        test_rows = ds.select(real_split, subset)
        notes.append(f"the test split has fewer than 2 images (subset {subset}); the {real_split} split is the real side")
    if len(test_rows) < 2:
        raise UserError(f"the dataset has fewer than 2 test (or val) images for subset {subset or '{}'}; "
                        "prepare it with a test fraction (--split 0.8,0.1,0.1)", ds.root)
    test = rows_set(ds, test_rows, {"kind": "run dataset", "path": str(ds.root), "split": real_split, "subset": subset})
    train = rows_set(ds, train_rows, {"kind": "run dataset", "path": str(ds.root), "split": train_split, "subset": subset})
    target = tuple(ds.images.shape[1:])
    real_set = load_image_set(real, "real", target, resize) if real is not None else test
    side = _RealSide(real_set, target, train, test, None, ds.label_ids(test_rows), ds, data)
    if len(train) >= 1:
        side.memorisation_sets = (train, test, real_set is test)
    if real_set is not test and real_set.labels is not None:
        lookup = {lab: i for i, lab in enumerate(model.info.labels)}
        side.test_ids = np.array([lookup[v] for v in real_set.labels if v in lookup], dtype=np.int64)
    return side


def _sets_real_side(real: Any, resize: bool) -> _RealSide:
    real_set = load_image_set(real, "real", None, resize)
    side = _RealSide(real_set, tuple(real_set.images.shape[1:]), dataset=real_set.dataset)
    ds = side.dataset
    if ds is not None:
        tr, te = ds.select("train"), ds.select("test")
        if len(tr) and len(te):
            side.train = rows_set(ds, tr, {"kind": "prepared dataset", "path": str(ds.root), "split": "train"})
            side.test = rows_set(ds, te, {"kind": "prepared dataset", "path": str(ds.root), "split": "test"})
            side.memorisation_sets = (side.train, side.test, real_set.source.get("split") == "test")
    return side


def _writable_cache(dataset_root: Path | None, out_root: Path) -> Path:
    """The dataset's cache/ (shared by every run on it) when writable, else the run's / output's."""
    if dataset_root is not None:
        c = Path(dataset_root) / "cache"
        try:
            c.mkdir(exist_ok=True)
            if os.access(c, os.W_OK):
                return c
        except OSError:
            pass
    return Path(out_root) / "cache"


def _domain_factory(side: _RealSide, cache_dir: Path, device, notes: list[str], echo):
    """Trains (or reuses) the domain extractor on the dataset's train/val splits, else on the real set itself."""

    def build(_arg):
        from medgen.data.imageset import resize_to
        from medgen.evaluation.domain import DomainSettings, build_domain_extractor

        settings, ds, data, target = DomainSettings(), side.dataset, side.data, side.target
        if ds is not None:
            rows = ds.select(data.get("train_split", "train") if data else "train")
            if len(rows) > settings.max_train:
                rows = np.sort(np.random.default_rng(settings.seed).choice(rows, settings.max_train, replace=False))
            val_rows = ds.select(data.get("val_split", "val") if data else "val")
            x, xv = np.asarray(ds.images[rows], dtype=np.float32), np.asarray(ds.images[val_rows], dtype=np.float32)
            if x.shape[1:] != target:
                x = np.stack([resize_to(a, target[1:]) for a in x])
                xv = np.stack([resize_to(a, target[1:]) for a in xv]) if len(xv) else xv
            return build_domain_extractor(x, ds.label_ids(rows), cache_dir, xv, ds.label_ids(val_rows), ds.labels, settings,
                                          trained_on=f"{ds.root} (splits train/val, all labels)", device=device, echo=echo)
        real = side.real
        names = sorted(set(real.labels)) if real.labels is not None else []
        y = np.array([names.index(v) for v in real.labels]) if names else None
        notes.append("the domain extractor was trained on the --real images themselves (no prepared dataset given): "
                     "real features are in-sample, which favours the real side slightly")
        return build_domain_extractor(real.images, y, cache_dir, None, None, names or None, settings,
                                      trained_on=f"the --real images ({real.source.get('path', 'array')})",
                                      device=device, echo=echo)

    return build


# ----------------------------------------------------------------------------------------------
# the synthetic side


def _settings_rows(run, fake, model, cfg, side: _RealSide, sweep_list: list[dict], n, resize) -> list[dict]:
    """One row per synthetic set: {"fake": ImageSet} when given, else what to generate."""
    if run is None or fake is not None:
        if run is not None and sweep_list:
            raise UserError("--sweep generates images; it cannot be combined with --fake")
        return [{"fake": load_image_set(fake, "fake", side.target, resize)}]
    sc = cfg.sample
    T = model.num_timesteps
    n_fake = n or min(len(side.real), cfg.evaluate.n_samples or 200)
    test_ids = side.test_ids
    gen_labels = proportional(test_ids, n_fake) if model.conditional and len(test_ids) else None
    rows = []
    for s in (sweep_list or [{"sampler": sc.sampler, "steps": sc.steps}]):
        steps = s["steps"] or sc.steps or T
        if T is not None and steps is not None and steps > T:
            raise UserError(f"sweep/steps {steps} exceeds the {T} timesteps this model was trained with")
        if s.get("guidance") is not None and not model.conditional:
            raise UserError(f"sweep setting {s['sampler']}:{s['steps']}:{s['guidance']:g}: a guidance scale needs a class-conditional run")
        rows.append({"sampler": s["sampler"], "steps": steps, "seed": sc.seed, "guidance": s.get("guidance", sc.guidance),
                     "n": n_fake, "labels": gen_labels})
    return rows


def _synthetic_set(row: dict, n: int | None, model, inputs: RunInputs, echo) -> tuple[ImageSet, float | None, bool | None]:
    """The synthetic set of a settings row, seconds per generated image, and whether it came from the cache."""
    if "fake" in row:
        fake_set = row["fake"]
        if n is not None and n < len(fake_set):
            fake_set = ImageSet(fake_set.images[:n], None if fake_set.labels is None else fake_set.labels[:n],
                                {**fake_set.source, "n_images": n, "note": f"first {n} images"})
        return fake_set, None, None
    imgs, lab_ids, seconds, cached = generate_cached(
        model, inputs.fingerprint, row["n"], row["labels"], row["sampler"], row["steps"], row["seed"], row["guidance"],
        inputs.sample.batch_size, inputs.cache_dir, echo)
    labels = np.asarray([model.info.labels[int(k)] for k in lab_ids], dtype=object) if lab_ids is not None else None
    return ImageSet(imgs, labels, {"kind": "generated", "sampler": row["sampler"], "steps": row["steps"], "seed": row["seed"],
                                   "guidance": row["guidance"], "n_images": len(imgs), "seconds_per_image": seconds,
                                   "reused_from_cache": cached, "checkpoint": inputs.fingerprint,
                                   "quantised": "16-bit, like an exported PNG"}), seconds, cached


def _evaluations(settings: dict) -> int | None:
    """Network evaluations per image of a diffusion setting (None without a sampler and steps)."""
    if settings.get("sampler") in samplers.SAMPLERS and settings.get("steps"):
        return samplers.get(settings["sampler"]).evaluations(int(settings["steps"]))
    return None


def _fake_settings(fake: ImageSet) -> dict:
    src = fake.source
    return {"sampler": src.get("sampler"), "steps": src.get("steps"), "seed": src.get("seed"), "guidance": src.get("guidance")}


# ----------------------------------------------------------------------------------------------
# results


def summary(result: dict) -> dict:
    """Flat {"fid/domain": value, ...} of the headline numbers (for tables and `medgen runs`);
    intervals, where a group gives them, in ``result["summary_intervals"]`` by the same keys."""
    values: dict = {}
    for group in all_groups():
        section = result.get(group.name)
        if isinstance(section, dict):
            values.update({k: h["value"] for k, h in group.headline(section).items()})
    return values


def _intervals(result: dict) -> dict:
    out: dict = {}
    for group in all_groups():
        section = result.get(group.name)
        if isinstance(section, dict):
            out.update({k: {x: v for x, v in h.items() if x != "value"} for k, h in group.headline(section).items() if "ci" in h})
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None  # JSON has no NaN/inf
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _version() -> str:
    try:
        from medgen import __version__

        return __version__
    except ImportError:
        return "unknown"


def _write(result: dict, run_dir, fig_dir: Path) -> dict:
    result = _jsonable(result)
    if run_dir is not None:
        run_dir.update_metrics("evaluation", result)
        result["output"] = str(run_dir.metrics_path)
    else:
        from medgen.fsio import atomic_write_json

        path = fig_dir / "metrics.json"
        atomic_write_json(path, {"evaluation": result})
        result["output"] = str(path)
    return result


# ----------------------------------------------------------------------------------------------
# the orchestration


@dataclass
class _Plan:
    """What an evaluation will do, from its arguments and (with a run) the run's ``evaluate`` config."""

    names: list[str]
    feature_specs: list[tuple[str, str | None]]
    sweep_list: list[dict]
    fig_dir: Path
    cfg: Any = None
    model: Any = None
    run_dir: Any = None


def _plan(run, fake, metrics, features, utility: bool, sweep, out, device, inputs: RunInputs, seg_utility: bool = False) -> _Plan:
    from medgen.evaluation.features import parse_feature_specs

    if run is None:
        sweep_list = parse_sweep(sweep)
        if sweep_list:
            raise UserError("--sweep generates images: it needs a RUN")
        plan = _Plan(parse_groups(metrics, DEFAULT_SET_GROUPS), parse_feature_specs(features), sweep_list,
                     Path(out) if out is not None else Path("evaluation"))
    else:
        from medgen.sampling import load_run_model

        cfg, model, run_dir = load_run_model(run, device=device)
        ev = cfg.evaluate
        # the config's sweep applies to generated images only; an explicit --sweep with --fake is an error later
        plan = _Plan(parse_groups(metrics, ev.metrics), parse_feature_specs(features if features is not None else ev.features),
                     parse_sweep(sweep if sweep is not None else (None if fake is not None else ev.sweep)),
                     run_dir.root / "evaluation", cfg, model, run_dir)
        utility = utility or ev.utility
        inputs.family, inputs.sample, inputs.batch_size = cfg.model.family, cfg.sample, cfg.sample.batch_size
        inputs.cache_dir = plan.fig_dir / "cache"
        inputs.run_dir = run_dir.root
    if utility and "utility" not in plan.names:
        plan.names.append("utility")
    if seg_utility and "seg_utility" not in plan.names:
        plan.names.append("seg_utility")
    return plan


def _compare_synthetic(rows: list[dict], plan: _Plan, side: _RealSide, feats: FeatureCache, inputs: RunInputs, n,
                       result: dict, echo) -> list[dict]:
    """Run the synthetic-scope groups on every synthetic set; the first one's sections go into ``result``.
    Returns the sweep rows (settings and headline numbers per set) when there is a sweep."""
    listed = result["metrics"]
    sweep_rows = []
    for i, row in enumerate(rows):
        if not listed and "fake" not in row:
            break  # nothing to compare (e.g. --metrics utility): generate nothing here
        fake_set, seconds, cached = _synthetic_set(row, n, plan.model, inputs, echo)
        if len(fake_set) < 2:
            raise UserError(f"the synthetic set has {len(fake_set)} image(s); at least 2 are needed")
        settings = _fake_settings(fake_set)
        fig_dir = plan.fig_dir if i == 0 else plan.fig_dir / setting_name(settings, rows).replace(" ", "-")
        ctx = Context(side.real, feats, echo, fake_set, settings, fig_dir, side.memorisation_sets, run=inputs)
        res = {name: get_group(name).compute(ctx) for name in plan.names if get_group(name).scope == "synthetic"}
        if i == 0:
            result["fake"] = fake_set.source
            result.update(res)
            if "fake" in row:
                inputs.given_fake = fake_set
        if plan.sweep_list:
            sweep_rows.append({**settings, "nfe": _evaluations(settings), "n_fake": len(fake_set), "seconds_per_image": seconds,
                               "reused_from_cache": cached,
                               **summary(res), "intervals": _intervals(res)})
    return sweep_rows


def evaluate(run: str | Path | None = None, real: Any = None, fake: Any = None, metrics: str | Sequence[str] | None = None,
             features: str | Sequence[str] | None = None, utility: bool = False, n: int | None = None,
             sweep: str | Sequence[Any] | None = None, out: str | Path | None = None, echo=print, *,
             utility_ratio: float = 1.0, utility_mix: float = 1.0, utility_seeds: int | Sequence[int] = 3,
             utility_settings: Any = None, resize: bool = True, device: str | None = None,
             n_resamples: int | None = None, seg_utility: dict | None = None) -> dict:
    """Evaluate a run's synthetic images (or any two image sets); see the module docstring.

    run: a trained run directory. real / fake: folders, prepared datasets (DIR or DIR@split) or
    arrays; with a run they replace the run's test split / generated images. metrics: groups (list
    or comma string; default the run's ``evaluate.metrics``, else fidelity, distribution, sensitivity,
    intensity, memorisation; the registered groups are in :mod:`medgen.evaluation.groups`).
    features: ``NAME[:PATH]`` (comma-separated for several; default the run's
    ``evaluate.features``, else ``domain,texture``). utility: add the train-on-synthetic table
    (``utility_ratio`` synthetic images per real training image and class, ``utility_mix``
    synthetic per real image in the mixed set, ``utility_seeds`` seeds or a list of them,
    ``utility_settings`` a :class:`~medgen.evaluation.classifier.DomainSettings` for the
    classifier). n: number of synthetic images. sweep: 'SAMPLER:STEPS,...' or [{sampler, steps}],
    one row per setting ('none' turns the config's sweep off). out: output folder without a run
    (default ./evaluation). n_resamples: bootstrap resamples of the intervals (default the run's
    ``evaluate.n_resamples``, else 1000; 0 = none). seg_utility: add the segmentation-utility group with
    these options (``pairs``, ``k_real``, ``k_runs``, ``seeds``, ``settings``, ``n_synthetic``, ``steps``;
    see :mod:`medgen.evaluation.groups.seg_utility`); ``metrics`` may name the group with its defaults.
    Returns the JSON-able result that is written to metrics.json.
    """
    if run is None and (real is None or fake is None):
        raise UserError("give a RUN, or both --real and --fake (image folders or prepared datasets)")
    notes: list[str] = []
    inputs = RunInputs(utility={"ratio": utility_ratio, "mix": utility_mix, "seeds": utility_seeds, "settings": utility_settings},
                       seg_utility=dict(seg_utility or {}))
    plan = _plan(run, fake, metrics, features, utility, sweep, out, device, inputs, seg_utility is not None)
    inputs.n_resamples = int(n_resamples if n_resamples is not None else plan.cfg.evaluate.n_resamples if plan.cfg is not None else 1000)
    if inputs.n_resamples < 0:
        raise UserError(f"--resamples must be >= 0, got {inputs.n_resamples}")
    if n is not None and n < 2:
        raise UserError(f"--n must be at least 2 (FID needs 2 images per side), got {n}")
    # one evaluation of an output folder at a time: two would interleave its figures and caches and
    # the last to finish would replace the other's metrics.json section
    with output_folder_lock(plan.fig_dir, "evaluation output"):
        return _evaluate(run, real, fake, n, resize, device, echo, plan, inputs, notes)


def _evaluate(run, real, fake, n, resize, device, echo, plan: _Plan, inputs: RunInputs, notes: list[str]) -> dict:
    side = _run_real_side(plan.run_dir, plan.model, real, resize, notes) if run is not None else _sets_real_side(real, resize)
    if len(side.real) < 2:
        raise UserError(f"the real set has {len(side.real)} image(s); at least 2 are needed")
    cache_dir = _writable_cache(side.dataset.root if side.dataset is not None else None,
                                plan.run_dir.root if plan.run_dir is not None else plan.fig_dir)
    feats = FeatureCache(plan.feature_specs, _domain_factory(side, cache_dir, device, notes, echo), device, echo)
    if any("features" in get_group(g).needs for g in plan.names):
        for name in feats.names():  # fail early on missing weights, before any generation
            feats.get(name)

    result: dict = {
        "medgen_version": _version(), "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "mode": "run" if run is not None else "sets", "run": str(plan.run_dir.root) if plan.run_dir is not None else None,
        "metrics": [g for g in plan.names if get_group(g).in_all], "real": side.real.source,
    }
    rows = _settings_rows(run, fake, plan.model, plan.cfg, side, plan.sweep_list, n, resize)
    if "fake" not in rows[0]:
        inputs.fingerprint = checkpoint_fingerprint(plan.run_dir)
    sweep_rows = _compare_synthetic(rows, plan, side, feats, inputs, n, result, echo)
    result["features"] = feats.describe()
    if sweep_rows:
        result["sweep"] = sweep_rows
        figure = sweep_figure(sweep_rows, plan.fig_dir / "sweep.png")
        result["sweep_figure"] = str(figure) if figure is not None else None
    ctx = Context(side.real, feats, echo, memorisation_sets=side.memorisation_sets, train=side.train, test=side.test,
                  model=plan.model, run=inputs, fig_dir=plan.fig_dir)
    for name in plan.names:
        if get_group(name).scope == "run":
            result[name] = get_group(name).compute(ctx)
    result["summary"] = summary(result)
    intervals = _intervals(result)
    if intervals:
        result["summary_intervals"] = intervals
    if notes:
        result["notes"] = notes
    return _write(result, plan.run_dir, plan.fig_dir)
