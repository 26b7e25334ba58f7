"""``medgen weights``: the optional pretrained files medgen can use, whether each is present, and
exactly where to put it. medgen never downloads them (many sites cannot reach the internet) and
never substitutes random weights when one is missing. ``load_weights_file`` reads such a file
without ever running code from it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medgen.errors import UserError


def weights_dir() -> Path:
    return Path(os.environ.get("MEDGEN_WEIGHTS", Path.home() / ".cache" / "medgen" / "weights")).expanduser()


def hub_dir() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")).expanduser() / "hub" / "checkpoints"


@dataclass(frozen=True)
class WeightsFile:
    name: str
    filename: str
    used_by: str
    option: str
    source: str


KNOWN = (
    WeightsFile("FID Inception-v3", "pt_inception-2015-12-05-6726825d.pth", "evaluate (standard FID features)",
                "--features inception:PATH", "pytorch-fid releases (github.com/mseitzer/pytorch-fid), file pt_inception-2015-12-05-6726825d.pth"),
    WeightsFile("ResNet-50 ImageNet", "resnet50-11ad3fa6.pth", "evaluate features (S000 used ResNet50), perceptual loss",
                "--features resnet50:PATH / model.perceptual_weights", "torchvision: download.pytorch.org/models/resnet50-11ad3fa6.pth"),
    WeightsFile("RadImageNet ResNet-50", "RadImageNet-ResNet50.safetensors", "evaluate features, perceptual loss (radimagenet_resnet50)",
                "--features radimagenet:PATH / model.perceptual_weights", "the RadImageNet project (radimagenet.com); convert the PyTorch weights to safetensors"),
    WeightsFile("AlexNet ImageNet (LPIPS backbone)", "alexnet-owt-7be5be79.pth", "S000 perceptual loss (LPIPS/AlexNet) with the lpips package",
                "model.perceptual_network=alex, model.perceptual_weights", "torchvision: download.pytorch.org/models/alexnet-owt-7be5be79.pth (+ lpips' own alex.pth)"),
    WeightsFile("VGG16 ImageNet", "vgg16-397923af.pth", "brain-ae-anomaly encoder (S003)",
                "--set model.encoder_weights=PATH", "torchvision: download.pytorch.org/models/vgg16-397923af.pth"),
)


def status() -> list[dict]:
    rows = []
    for w in KNOWN:
        candidates = [weights_dir() / w.filename, hub_dir() / w.filename]
        found = next((p for p in candidates if p.exists()), None)
        rows.append({"name": w.name, "file": w.filename, "present": found is not None, "path": str(found or candidates[0]),
                     "used_by": w.used_by, "option": w.option, "get_it_from": w.source})
    return rows


def load_weights_file(path: Path, allow_pickle: bool = False) -> dict[str, "torch.Tensor"]:
    """A weights file: safetensors always; a PyTorch pickle only with ``allow_pickle`` and then
    with ``weights_only=True``, which refuses anything but tensors and plain containers."""
    import torch

    path = Path(path)
    if not path.exists():
        raise UserError("weights file not found", path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise UserError(f"corrupt safetensors file ({err})", path) from None
    if not allow_pickle:
        raise UserError("refusing to load a pickled checkpoint (it could run code); convert it to safetensors "
                        "(safetensors.torch.save_file(torch.load(FILE, weights_only=True), 'model.safetensors'))", path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only raises UnpicklingError for anything executable
        raise UserError(f"refused to load: not a plain weights file ({err.__class__.__name__}: {str(err)[:200]})", path) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise UserError("file does not hold a state dict of tensors", path)
    return obj
