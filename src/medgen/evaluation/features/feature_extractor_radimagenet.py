"""``radimagenet:FILE``: a ResNet-50 trained on RadImageNet (Mei et al. 2022): a state dict in
torchvision naming, the official ``nn.Sequential`` backbone naming (``backbone.0.weight``...) or
TorchScript. Same preprocessing as resnet50.
"""
from __future__ import annotations

from typing import Any

from medgen.evaluation.features.feature_extractor_resnet50 import resnet50_extractor
from medgen.evaluation.features.torch_image import TorchImageExtractor, resolve_weights

USAGE = "radimagenet:FILE"
WEIGHTS = {
    "files": ["RadImageNet-ResNet50.pt", "radimagenet_resnet50.pt", "ResNet50.pt"],
    "where": ("the RadImageNet ResNet-50 PyTorch weights from the RadImageNet authors "
              "(https://github.com/BMEII-AI/RadImageNet, 'RadImageNet_pytorch/ResNet50.pt'); save its "
              "state_dict() or a TorchScript export if it is a pickled model"),
}


def build(arg: str | None, *, device: Any = None, **_: Any) -> TorchImageExtractor:
    return resnet50_extractor("radimagenet", resolve_weights("radimagenet", arg, WEIGHTS), device)
