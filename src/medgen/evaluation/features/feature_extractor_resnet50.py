"""``resnet50:FILE``: torchvision ResNet-50 ImageNet weights (``resnet50-11ad3fa6.pth`` or
``resnet50-0676ba61.pth``) or a TorchScript ResNet-50; features are the 2048-d
global-average-pooled penultimate layer (S000 computed FID this way). Input 224 x 224, ImageNet
mean/std.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medgen.evaluation.features.torch_image import (
    TorchImageExtractor,
    check_loaded,
    is_torchscript,
    load_state_dict,
    load_torchscript,
    resolve_weights,
    strip_prefixes,
    torchvision_or_error,
)

USAGE = "resnet50:FILE"
WEIGHTS = {
    "files": ["resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth", "resnet50-19c8e357.pth"],
    "where": ("torchvision's ImageNet ResNet-50 weights "
              "(https://download.pytorch.org/models/resnet50-11ad3fa6.pth or .../resnet50-0676ba61.pth)"),
}


def build(arg: str | None, *, device: Any = None, **_: Any) -> TorchImageExtractor:
    return resnet50_extractor("resnet50", resolve_weights("resnet50", arg, WEIGHTS), device)


def resnet50_extractor(name: str, path: Path, device: Any) -> TorchImageExtractor:
    prep_text = "grey->3 channels, bilinear resize to 224x224, ImageNet mean/std"
    if is_torchscript(path):
        net = load_torchscript(path)
        return TorchImageExtractor(name, net, path, 224, "imagenet", prep_text + "; TorchScript output pooled to (N, F)",
                                   "torchscript", device)
    import torch

    sd = strip_prefixes(load_state_dict(path))
    tv = torchvision_or_error(name)
    net = tv.models.resnet50(weights=None)
    net.fc = torch.nn.Identity()
    res = net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")}, strict=False)
    check_loaded(name, path, res)
    net.eval()
    return TorchImageExtractor(name, net, path, 224, "imagenet", prep_text + "; 2048-d global-average-pooled penultimate layer",
                               "torchvision-resnet50", device)
