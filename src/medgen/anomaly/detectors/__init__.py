"""The detector registry: each detector is one module here plus one ``register`` line below.

A model declares the detectors that apply to it (``model.detectors``, preferred first); ``auto``
takes the first of those that is registered. ``medgen detect --detector`` and its help read
:func:`names`.
"""
from __future__ import annotations

import importlib

from medgen.errors import UserError

# name -> "module:Class" (imported when used, so a torch-heavy detector costs nothing until chosen)
DETECTORS: dict[str, str] = {}


def register(name: str, target: str) -> None:
    DETECTORS[name] = target


def names() -> list[str]:
    return list(DETECTORS)


def detector_class(name: str):
    module, cls = DETECTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def choose(model, name: str = "auto") -> str:
    """The registered detector ``name`` if the model declares it, or for ``auto`` its first registered one."""
    family = type(model).__name__
    declared = [d for d in model.detectors if d in DETECTORS]
    if name == "auto":
        if not declared:
            raise UserError(f"{family} runs have no anomaly detector (registered: {', '.join(names())}); anomaly "
                            "detection needs a family that reconstructs (conv-ae, vae, vae-gan, ldm), a pixel ddpm, "
                            "or a patch-features run")
        return declared[0]
    if name not in DETECTORS:
        raise UserError(f"unknown --detector '{name}'; choose auto or one of {', '.join(names())}")
    if name not in declared:
        raise UserError(f"--detector {name} does not apply to {family} runs; these do: "
                        f"{', '.join(declared) or 'none'}")
    return name


register("reconstruct", "medgen.anomaly.detectors.reconstruct:Reconstruct")
register("model", "medgen.anomaly.detectors.own_map:OwnMap")
register("diffusion", "medgen.anomaly.detectors.diffusion:PartialDiffusion")
register("patchcore", "medgen.anomaly.detectors.patchcore:PatchCore")
register("padim", "medgen.anomaly.detectors.padim:Padim")
register("segmenter", "medgen.anomaly.detectors.own_map:Segmenter")
