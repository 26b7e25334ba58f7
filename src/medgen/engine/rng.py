"""Every random state a run depends on (torch, CUDA, numpy, python and the trainer's generator), as
plain lists for a checkpoint's state.json, and back: what makes ``--resume`` exact."""
from __future__ import annotations

import random

import numpy as np
import torch


def rng_state(generator: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state().tolist(), "numpy": _np_state(), "python": _py_state(),
            "generator": generator.get_state().tolist(),
            "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []}


def _np_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _py_state():
    v, internal, g = random.getstate()
    return [v, list(internal), g]


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    v, internal, g = state["python"]
    random.setstate((v, tuple(internal), g))
    generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen
