"""Work-arounds for environments with mismatched optional packages.

The only torchvision wheel matching CPU torch 2.13 is a CUDA build whose C extension fails to
load; its import then dies with "operator torchvision::nms does not exist", which also breaks
packages that import it (lpips, torch-fidelity). Registering the two missing operator schemas
lets its pure-Python parts (model definitions) import. medgen never needs torchvision's C ops.
"""
from __future__ import annotations

import functools
import importlib


@functools.lru_cache(maxsize=1)
def import_torchvision():
    """Import torchvision, patching missing op schemas if needed; None when it is not installed."""
    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError:
        return None
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    import sys

    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "FRAGMENT")  # noqa: F841 - kept alive below
    for schema in (
        "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    ):
        try:
            lib.define(schema)
        except RuntimeError:
            pass  # already defined
    import_torchvision._lib = lib
    return importlib.import_module("torchvision")
