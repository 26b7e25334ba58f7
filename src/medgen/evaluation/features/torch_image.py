"""2-D ImageNet-style torch networks as feature extractors, and how their weights files are found
and loaded (TorchScript archives, torchvision state dicts, the torch hub cache).

Grey images: the channel is replicated to 3 channels (other channel counts than 1 or 3 are first
averaged to grey), resized bilinearly (with anti-aliasing when shrinking) to the network's input
size, then normalised the way the weights expect. Volumes (N, C, D, H, W): the network sees axial
slices (all of them, or 16 evenly spaced when there are more) and a volume's feature is the mean of
its slices' features.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medgen.errors import UserError
from medgen.evaluation.features.base import FeatureExtractor

__all__ = ["TorchImageExtractor", "check_loaded", "is_torchscript", "load_state_dict", "load_torchscript",
           "nvidia_style", "resolve_weights", "strip_prefixes", "torchvision_or_error"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_SLICES = 16


def _hub_checkpoints() -> Path | None:
    try:
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints"
    except Exception:  # noqa: BLE001 - no hub dir is not an error
        return None


def resolve_weights(name: str, arg: str | None, help_: dict[str, Any]) -> Path:
    """The weights file for an ImageNet-style extractor: the given path, else one of ``help_["files"]``
    in the torch hub cache; a clear UserError naming the file and where to get it (``help_["where"]``)."""
    if arg:
        path = Path(arg).expanduser()
        if not path.is_file():
            raise UserError(f"weights file for the '{name}' feature extractor not found. Get {help_['where']} "
                            f"and pass --features {name}:PATH", path)
        return path.resolve()
    hub = _hub_checkpoints()
    if hub is not None:
        for fname in help_["files"]:
            if (hub / fname).is_file():
                return hub / fname
    looked = f" (looked in the torch hub cache {hub} for {', '.join(help_['files'])})" if hub else ""
    raise UserError(f"the '{name}' feature extractor needs a local weights file: no file given{looked}. "
                    f"Get {help_['where']}, then use --features {name}:PATH (or put it in the hub cache); "
                    "or use the offline extractors 'domain' or 'radiomics'")


def is_torchscript(path: Path) -> bool:
    """TorchScript archives hold compiled code (``*/code/``, ``constants.pkl``); torch.save'd state
    dicts do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist())


def load_torchscript(path: Path):
    import torch

    import warnings

    try:
        with warnings.catch_warnings():  # torch >= 2.10 flags torch.jit as deprecated; the files still load
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:  # noqa: BLE001 - any load failure is the user's file
        raise UserError(f"cannot load TorchScript file ({err.__class__.__name__}: {str(err)[:200]})", path) from None


def load_state_dict(path: Path) -> dict:
    """Tensors only: safetensors, or a PyTorch pickle read with weights_only=True (refuses code)."""
    from medgen.weights import load_weights_file

    return load_weights_file(path, allow_pickle=True)


def torchvision_or_error(name: str):
    from medgen.compat import import_torchvision

    tv = import_torchvision()
    if tv is None:
        raise UserError(f"the '{name}' feature extractor with a state-dict weights file needs torchvision "
                        "(pip install --no-deps torchvision matching your torch, e.g. torchvision==0.28.0 for torch 2.13), "
                        "or give a TorchScript export of the network instead")
    return tv


def _to_rgb(x):
    """(N, C, H, W) -> (N, 3, H, W): grey replicated, other counts averaged to grey first."""
    c = x.shape[1]
    if c == 3:
        return x
    if c != 1:
        x = x.mean(dim=1, keepdim=True)
    return x.expand(-1, 3, -1, -1)


def _resize(x, size: int):
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == (size, size):
        return x
    shrink = min(x.shape[-2:]) > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def _slices(images: np.ndarray) -> tuple[np.ndarray, int]:
    """(N, C, *spatial) -> 2-D images (M, C, H, W) and slices per item (1 for 2-D)."""
    if images.ndim == 4:
        return images, 1
    if images.ndim != 5:
        raise ValueError(f"expected images (N, C, H, W) or (N, C, D, H, W), got shape {images.shape}")
    d = images.shape[2]
    idx = np.arange(d) if d <= MAX_SLICES else np.linspace(0, d - 1, MAX_SLICES).round().astype(int)
    sl = images[:, :, idx]  # (N, C, k, H, W)
    return np.ascontiguousarray(np.moveaxis(sl, 2, 1).reshape(-1, images.shape[1], *images.shape[3:])), len(idx)


class TorchImageExtractor(FeatureExtractor):
    """A 2-D torch network; ``prep`` turns a [0, 1] (B, 3, S, S) batch into its input."""

    def __init__(self, name: str, net: Callable, weights: Path, input_size: int, prep: str,
                 preprocessing: str, variant: str, device: Any = None):
        import torch

        self.name = name
        self.net = net
        self.weights = weights
        self.input_size = input_size
        self.prep = prep
        self.preprocessing = preprocessing
        self.variant = variant
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if hasattr(net, "to"):
            net.to(self.device)

    def _prepare(self, x):
        import torch

        x = _resize(_to_rgb(x), self.input_size)
        if self.prep == "imagenet":
            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            return (x - mean) / std
        if self.prep == "minus1to1":
            return x * 2.0 - 1.0
        if self.prep == "0to255":
            return x * 255.0
        raise AssertionError(self.prep)

    def _forward(self, x):
        out = self.net(x, True) if self.variant == "nvidia" else self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.dim() > 2:  # (B, F, h, w): global average pool
            out = out.flatten(2).mean(dim=2)
        return out

    def __call__(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        import torch

        images = np.asarray(images, dtype=np.float32)
        flat, k = _slices(images)
        feats = []
        with torch.no_grad():
            for start in range(0, len(flat), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(flat[start:start + batch_size])).to(self.device)
                feats.append(self._forward(self._prepare(x)).float().cpu().numpy())
        f = np.concatenate(feats).astype(np.float64) if feats else np.zeros((0, self.dim or 0))
        if f.ndim != 2:
            raise UserError(f"the '{self.name}' network returned features of shape {f.shape}; expected (N, F)", self.weights)
        self.dim = int(f.shape[1])
        return f.reshape(len(images), k, -1).mean(axis=1)

    def describe(self) -> dict:
        return {**super().describe(), "variant": self.variant, "input_size": self.input_size}


def nvidia_style(module) -> bool:
    try:
        return "return_features" in str(module.forward.schema)
    except Exception:  # noqa: BLE001 - traced modules have no named arguments
        return False


def check_loaded(name: str, path: Path, result) -> None:
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise UserError(f"the weights do not fit the '{name}' network: " + "; ".join(detail)
                        + ". Give a state dict in torchvision naming or a TorchScript export", path)


def strip_prefixes(sd: dict) -> dict:
    """Drop wrapper prefixes (module., model., encoder.) and map the RadImageNet nn.Sequential
    backbone naming (backbone.0 = conv1, 1 = bn1, 4..7 = layer1..4) to torchvision's."""
    seq = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "model.", "encoder.", "net."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith("backbone."):
            rest = k[len("backbone."):]
            head, _, tail = rest.partition(".")
            k = f"{seq[head]}.{tail}" if head in seq else rest
        out[k] = v
    return out
