"""The generation message names a sampler only for families that have one (a GAN's read "ddim, None steps")."""
from __future__ import annotations

import torch

from medgen.evaluation.generation import generate_cached
from medgen.models.base import DataInfo, FamilyParams, GenerativeModel


class _OnePass(GenerativeModel):
    def __init__(self):
        super().__init__(FamilyParams(), DataInfo(2, 1, (4, 4), []))
        self.w = torch.nn.Parameter(torch.zeros(1))

    def sample(self, n, labels=None, steps=None, generator=None, **kwargs):
        return torch.zeros(n, 1, 4, 4)


class _Iterative(_OnePass):
    samplers = ("ddim",)


def _message(model, tmp_path):
    lines = []
    generate_cached(model, "fp", 2, None, "ddim", None, 0, 1.0, 2, tmp_path, lines.append)
    return " ".join(lines)


def test_one_pass_family_message_names_no_sampler(tmp_path):
    msg = _message(_OnePass(), tmp_path)
    assert "generating 2 images" in msg and "ddim" not in msg and "None" not in msg


def test_iterative_family_message_names_its_sampler(tmp_path):
    assert "ddim" in _message(_Iterative(), tmp_path / "b")
