"""Configuration: a pydantic schema, presets with profiles, ``--set key=value`` overrides.

A preset is ``presets/NAME.yaml``::

    description: ...
    study: S000                      # which study it reproduces (PROTOCOLS.md)
    default_profile: small
    config: {data: ..., model: ..., train: ..., sample: ..., evaluate: ...}
    profiles: {paper: {...}, small: {...}, tiny: {...}}   # deep-merged over config
    base: {preset: NAME, set: [KEY=VALUE, ...]}  # optional: the run it trains on top of (--init-from), for the docs
    extends: NAME                    # optional: another preset's recipe that this file changes (see load_preset)

Resolution order: preset ``config`` <- profile <- ``--set`` overrides; the result is validated
and written to the run's ``config.yaml``, which can be given back to ``medgen train`` as is.
Unknown keys are errors that name the key (with a suggestion); model-family parameters are
validated by the family's own schema (``medgen.models.registry``, reached through
``FAMILY_PARAMS_CHECK``); the sampler name by ``medgen.samplers``.
"""
from __future__ import annotations

import copy
import difflib
import importlib
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medgen.errors import UserError
from medgen.fsio import load_yaml_text

PRESET_DIR = Path(__file__).parent / "presets"
PROFILES = ("paper", "small", "tiny")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataConfig(Strict):
    path: str | None = None  # a prepared dataset; `--data` sets it
    builtin: str | None = None  # the built-in dataset this preset is designed for (documentation + demo)
    prepare: dict[str, Any] = Field(default_factory=dict)  # `data prepare` options for the built-in (size, n, normalize)
    subset: dict[str, str] = Field(default_factory=dict)  # index column -> value ("a|b" for several)
    train_split: str = "train"
    val_split: str = "val"
    conditional_on: str = "label"


class ModelConfig(BaseModel):
    """``family`` picks the model; the other keys are that family's parameters."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    family: str
    spatial_dims: Literal[2, 3] = 2

    @model_validator(mode="after")
    def _family_params(self):
        _family_params_check()(self.family, self.params())
        return self

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# Family parameters are validated by the model layer, which sits above config: config holds only the
# check's "module:function" target, loaded on first use the way the registries load their entries,
# so it imports nothing above it. set_family_params_check swaps it (an embedding application, a test).
FAMILY_PARAMS_CHECK = "medgen.models.registry:validate_params"


def set_family_params_check(target: str) -> None:
    global FAMILY_PARAMS_CHECK
    FAMILY_PARAMS_CHECK = target


def _family_params_check() -> Callable[[str, dict[str, Any]], object]:
    module, func = FAMILY_PARAMS_CHECK.split(":")
    return getattr(importlib.import_module(module), func)


class StageConfig(Strict):
    """Per-stage overrides (e.g. LDM ``autoencoder`` and ``diffusion`` stages)."""

    epochs: int | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)
    min_steps: int | None = Field(None, ge=1)
    val_every: int | None = Field(None, ge=1)
    lr_schedule: Literal["constant", "cosine"] | None = None


class TrainConfig(Strict):
    seed: int = 0
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_steps: int | None = Field(None, ge=1)  # stop a stage after this many optimiser steps
    # at least this many optimiser steps per stage: fewer training images than a preset was measured
    # on get more epochs instead of fewer steps (an epoch budget alone trains 250 images half as long
    # as 500). A stage set to 0 epochs stays skipped
    min_steps: int | None = Field(None, ge=1)
    val_every: int = Field(1, ge=1)  # epochs
    log_every: int = Field(10, ge=1)  # steps
    ema_decay: float | None = Field(None, ge=0, lt=1)
    amp: bool = True  # autocast on CUDA (bf16 where the GPU has it, else fp16 with loss scaling)
    # bf16 autocast on a CPU too, where it has native bf16 instructions (AVX512-BF16 or AMX): there
    # the conv and matmul kernels run about 1.5x faster. Opt-in: results then depend on the CPU model,
    # and a CPU without them emulates bf16, typically slower than fp32 (a run refuses it there). Needs amp.
    cpu_amp: bool = False
    # opt-in speed options (medgen.engine.speed; bench/bench_speed_options.py measures them): off by
    # default, since on a CPU they gain little and compiling costs more than it saves in a short run
    compile: bool = False  # torch.compile each network in place (kernels cached on disk)
    compile_backend: str = "inductor"
    channels_last: bool = False  # NHWC / NDHWC conv weights
    efficient_attention: bool = False  # MONAI attention blocks through scaled_dot_product_attention
    grad_clip: float | None = Field(None, gt=0)
    num_workers: int = Field(0, ge=0)
    keep_last: int = Field(2, ge=1)
    # the largest share of training time the epoch-end step checkpoints may take: one is skipped
    # while the last took longer than this share of the time since it (null: after every epoch)
    checkpoint_budget: float | None = Field(0.02, gt=0, le=1)
    max_nonfinite: int = Field(10, ge=1)  # consecutive non-finite losses before the run stops
    early_stopping_patience: int | None = Field(None, ge=1)
    lr_plateau_patience: int | None = Field(None, ge=1)
    # "cosine": each stage's learning rate falls from train.lr to 0 along a half cosine over the
    # stage's steps (Loshchilov & Hutter 2017), a function of the step alone, so a resumed run
    # continues on the same curve. A short CPU run ends at its lowest loss instead of the noise
    # floor of a constant rate.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    device: str = "auto"
    stages: dict[str, StageConfig] = Field(default_factory=dict)


class SampleConfig(Strict):
    n: int = Field(16, ge=1)
    sampler: str = "ddim"  # a name in medgen.samplers' registry
    steps: int | None = Field(None, ge=1)
    guidance: float = Field(1.0, ge=0)
    seed: int = 0
    format: Literal["png", "npy", "nii", "dcm"] = "png"
    batch_size: int = Field(16, ge=1)

    @field_validator("sampler")
    @classmethod
    def _registered_sampler(cls, name: str) -> str:
        from medgen import samplers

        if name not in samplers.names():
            raise ValueError(f"unknown sampler '{name}'; samplers: {', '.join(samplers.names())}")
        return name


class EvaluateConfig(Strict):
    metrics: list[str] = Field(default_factory=lambda: ["fidelity", "distribution", "sensitivity", "intensity", "memorisation"])
    features: str = "domain,texture"  # texture sees blur and lost contrast, which a label classifier may ignore
    n_resamples: int = Field(1000, ge=0)  # bootstrap resamples of every interval (0: no intervals)
    n_samples: int | None = Field(None, ge=2)
    sweep: list[dict[str, Any]] = Field(default_factory=list)  # e.g. [{sampler: ddpm, steps: 1000}, {sampler: ddim, steps: 50, guidance: 3}]
    utility: bool = False


class Config(Strict):
    preset: str | None = None
    profile: str | None = None
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    def stage(self, name: str) -> TrainConfig:
        """The train settings for one stage: the common ones with the stage's overrides applied."""
        over = self.train.stages.get(name)
        if over is None:
            return self.train
        return self.train.model_copy(update={k: v for k, v in over.model_dump().items() if v is not None})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str, _chain: tuple[str, ...] = ()) -> dict:
    """A preset file as a dict. With ``extends: PARENT`` it holds only what differs from PARENT: the
    parent's ``config`` and each of its profiles are deep-merged under this file's (a profile set to
    ``null`` drops the parent's profile of that name); ``description``, ``study``, ``base`` and
    ``default_profile`` are this file's own, the last falling back to the parent's. So a change to a
    recipe reaches every preset built on it."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        hint = difflib.get_close_matches(name, preset_names(), n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise UserError(f"unknown preset '{name}'{extra}; presets: {', '.join(preset_names())}")
    preset = yaml.safe_load(path.read_text())
    parent_name = preset.get("extends")
    if parent_name is None:
        return preset
    if parent_name in _chain + (name,):
        raise UserError(f"preset extends itself: {' -> '.join(_chain + (name, parent_name))}", path)
    if not (PRESET_DIR / f"{parent_name}.yaml").exists():
        raise UserError(f"extends unknown preset '{parent_name}'", path)
    parent = load_preset(parent_name, _chain + (name,))
    profiles = dict(parent.get("profiles", {}))
    for profile, over in (preset.get("profiles") or {}).items():
        if over is None:
            profiles.pop(profile, None)
        else:
            profiles[profile] = deep_merge(profiles.get(profile) or {}, over)
    merged = {k: v for k, v in preset.items() if k not in ("config", "profiles")}
    merged.setdefault("default_profile", parent.get("default_profile", "small"))
    merged["config"] = deep_merge(parent.get("config", {}), preset.get("config") or {})
    merged["profiles"] = profiles
    return merged


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"bad --set '{item}': expected KEY=VALUE, e.g. train.epochs=5")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = copy.deepcopy(raw)
    for item in overrides:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            if not isinstance(node.get(k, {}), dict):
                raise UserError(f"bad --set '{item}': '{k}' is not a section")
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return raw


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(loc[-1]), _known_keys(Config, loc), n=1)
            lines.append(f"{key}: unknown key" + (f" (did you mean '{'.'.join(map(str, loc[:-1] + (hint[0],)))}'?)" if hint else ""))
        else:
            lines.append(f"{key}: {e['msg']}" if key else e["msg"])
    return f"invalid config ({source}): " + "; ".join(lines)


def validate(raw: dict, source: str) -> Config:
    from medgen.validation import check_config_ranges

    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(err, source)) from None
    return check_config_ranges(cfg, source)  # values the schema lets through that crash or poison a run


def resolve(name_or_path: str, profile: str | None = None, overrides: list[str] | None = None) -> Config:
    """A validated config from a preset name (with a profile) or a YAML file, plus overrides."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.exists():
            raise UserError("config file not found", path)
        raw = load_yaml_text(path.read_text(errors="replace"), path)
        if profile:
            raise UserError("--profile applies to presets; a config file is already resolved", path)
        source = str(path)
    else:
        preset = load_preset(name_or_path)
        profile = profile or preset.get("default_profile", "small")
        profiles = preset.get("profiles", {})
        if profile not in profiles:
            raise UserError(f"preset '{name_or_path}' has no profile '{profile}'; profiles: {', '.join(profiles)}")
        raw = deep_merge(preset["config"], profiles[profile])
        raw.update(preset=name_or_path, profile=profile, description=preset.get("description", ""))
        source = f"preset {name_or_path}, profile {profile}"
    raw = apply_overrides(raw, overrides or [])
    return validate(raw, source + (" with --set" if overrides else ""))
