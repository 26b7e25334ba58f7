"""Checks of what a user asked for against what a run or a dataset can give, each ending in a
one-line UserError that names the difference and what to type instead."""
from __future__ import annotations

from pathlib import Path

from medgen.errors import UserError


def flatten(node, prefix: str = "") -> dict:
    """A nested dict as {"a.b.c": leaf}: config sections compared or listed key by key."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_resume_flags(run, cfg, config: str | None, profile: str | None, overrides: list[str] | None,
                       subset: list[str] | None, init_from, data) -> None:
    """Accept ``train ... --resume`` when the repeated flags agree with the run's config.yaml (a user
    appending --resume to the command that started the run); refuse a real difference, naming it."""
    from medgen.config import resolve
    from medgen.training import parse_subset

    overrides = list(overrides or [])
    if config or profile or overrides:
        # the config the flags ask for, resolved as a fresh run would resolve it
        if config:
            base = config
        elif profile and cfg.preset:
            base = cfg.preset
        else:
            base = str(run.config_path)
        asked = resolve(base, profile if (config or profile) else None, overrides).model_dump(mode="json")
        have = cfg.model_dump(mode="json")
        for dump in (asked, have):  # set from --data and --subset when the run started: compared below
            dump["data"].pop("path", None)
            dump["data"].pop("subset", None)
            dump.pop("description", None)
        a, h = flatten(asked), flatten(have)
        diff = sorted(k for k in set(a) | set(h) if a.get(k) != h.get(k))
        if diff:
            k = diff[0]
            more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
            raise UserError(f"--resume: {k} would be {_short(a.get(k))} but the run has {_short(h.get(k))}{more}; "
                            "drop the flags that change it, or start a new run with another --out", run.root)
    if subset:
        asked_subset = {**cfg.data.subset, **parse_subset(subset)}
        if asked_subset != dict(cfg.data.subset):
            raise UserError(f"--resume: --subset gives {asked_subset} but the run trains on {dict(cfg.data.subset)}", run.root)
    if data is not None and cfg.data.path and Path(data).resolve() != Path(cfg.data.path).resolve():
        raise UserError(f"--resume: --data {data} is not the run's dataset ({cfg.data.path})", run.root)
    if init_from is not None:
        started = (run.data().get("init_from") or {}).get("from")
        inside = started and (Path(started).resolve() == Path(init_from).resolve()
                              or Path(init_from).resolve() in Path(started).resolve().parents)
        if not inside:
            raise UserError(f"--resume: the run was not started --init-from {init_from} "
                            f"({'from ' + started if started else 'it had no --init-from'})", run.root)


def no_training_items(ds, split: str, where: dict, data) -> UserError:
    """Why a subset selects nothing, with the labels the split does have and the --subset for them."""
    rows = ds.select(split)
    if len(rows) == 0:
        return UserError(f"no items in split '{split}' (the dataset's splits: "
                         f"{', '.join(sorted(set(ds.index['split'])))})", data)
    present = sorted(set(ds.index["label"].iloc[rows]))
    counts = ", ".join(f"{lab} ({int((ds.index['label'].iloc[rows] == lab).sum())})" for lab in present[:10])
    # a label named like normal images is the likely intent of an anomaly preset's subset
    normal = [lab for lab in present if lab.lower() in ("normal", "healthy", "none")]
    suggestion = f"--subset label={(normal or present)[0]}" if normal or len(present) == 1 else f"--subset label={'|'.join(present[:3])}"
    return UserError(f"no training items in split '{split}' with subset {where}; labels present there: {counts}; "
                     f"to train on them add {suggestion}", data)


MAX_SEED = 2**32 - 1  # numpy's seeds end here (torch's go further)
MAX_WIDTH = 16384  # channels or features of one layer: beyond this a model does not fit any GPU's memory
WIDTH_WORDS = ("channels", "dim", "width", "features", "filters")
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def _widths(node, key: str = ""):
    """(dotted key, value) of every integer under a key that names a layer width."""
    return [(k, v) for k, v in _numbers(node, key)
            if isinstance(v, int) and any(w in k.rsplit(".", 1)[-1] for w in WIDTH_WORDS)]


def _numbers(node, key: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _numbers(v, key)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield key, node


def sampler_problems(cfg) -> list[str]:
    """Samplers in ``sample`` and ``evaluate.sweep`` that cannot walk what the model is trained to
    predict (a noise sampler for an rflow model, or the reverse): found before training starts."""
    from medgen import samplers
    from medgen.models.registry import validate_params

    kind = validate_params(cfg.model.family, cfg.model.params()).sampler_drives()
    if kind is None:
        return []
    drives, why = kind
    fits = samplers.names(drives=drives)
    asked = [("sample.sampler", cfg.sample.sampler)]
    asked += [(f"evaluate.sweep[{i}].sampler", s.get("sampler")) for i, s in enumerate(cfg.evaluate.sweep)]
    return [f"{key}: '{name}' walks a {samplers.SAMPLERS[name].drives} predictor, but {why} trains one that predicts "
            f"the {drives}: use {' or '.join(fits)}" for key, name in asked if name in samplers.SAMPLERS and name not in fits]


def config_range_problems(cfg) -> list[str]:
    """What in a schema-valid config would still crash or poison a run once it started: checked up
    front, before a run directory exists."""
    import math
    import re

    problems = []
    dump = cfg.model_dump(mode="python")
    for key, value in _numbers(dump):
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{key}: {value} is not a finite number")
    for key in ("train.seed", "sample.seed"):
        section, name = key.split(".")
        seed = dump[section][name]
        if not 0 <= seed <= MAX_SEED:
            problems.append(f"{key}: {seed} is outside 0..{MAX_SEED}")
    for key, width in _widths(dump["model"], "model"):
        low = 0 if "head" in key.rsplit(".", 1)[-1] else 1  # num_head_channels 0: MONAI's "no attention heads"
        if not low <= width <= MAX_WIDTH:
            problems.append(f"{key}: {width} is not a layer width ({low}..{MAX_WIDTH})")
    problems += sampler_problems(cfg)
    device = str(cfg.train.device)
    if device != "auto" and not re.fullmatch(rf"({'|'.join(DEVICE_TYPES)})(:\d+)?", device):
        problems.append(f"train.device: '{device}' is not auto, cpu, cuda, cuda:N or mps")
    return problems


def check_config_ranges(cfg, source: str):
    """The config, or a one-line UserError listing what is out of range (exit 2)."""
    problems = config_range_problems(cfg)
    if problems:
        raise UserError(f"invalid config ({source}): " + "; ".join(problems))
    return cfg
