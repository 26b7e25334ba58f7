"""Feature extractors for distribution metrics (FID/KID/PRDC) and feature-space memorisation.

Every extractor maps a batch of images ``(N, C, *spatial)`` in [0, 1] to features ``(N, F)`` and
describes itself (:meth:`FeatureExtractor.describe`: name, weights file and its SHA-256, feature
size, preprocessing). Results always name the extractor that produced them; an extractor whose
weights are missing is an error, never silently replaced by another one or by random weights.

Names accepted by ``--features NAME[:ARG]`` (several comma-separated; the first one is also used
for feature-space memorisation):

``domain[:FILE]``
    The offline default: a small CNN trained on the real training images of the dataset
    (:mod:`medgen.evaluation.domain`): a classifier when there are >= 2 labels, else an
    autoencoder. Trained once per dataset and cached; ``FILE`` loads a given cached
    ``domain-*.safetensors``.
``inception:FILE``
    The standard FID Inception-v3 (2048-d pool features). ``FILE`` is one of
      * ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid; torch-fidelity ships the same
        weights as ``weights-inception-2015-12-05-6726825d.pth``): the TF-FID network, rebuilt
        here on torchvision's Inception3 with the FID-specific pooling blocks. Published FIDs
        use this network;
      * a TorchScript file: NVIDIA's ``inception-2015-12-05.pt`` (clean-fid, StyleGAN2-ADA; its
        ``forward`` takes ``return_features``; input 0..255), or any TorchScript module taking
        (N, 3, 299, 299) in [-1, 1] and returning (N, 2048) (or (N, 2048, h, w), pooled here);
      * torchvision's ``inception_v3_google-0cc3c7bd.pth`` state dict: ImageNet Inception-v3,
        *not* the FID network, so its numbers are not comparable with published FIDs.
``resnet50:FILE``
    torchvision ResNet-50 ImageNet weights (``resnet50-11ad3fa6.pth`` or ``resnet50-0676ba61.pth``)
    or a TorchScript ResNet-50; features are the 2048-d global-average-pooled penultimate layer
    (S000 computed FID this way). Input 224 x 224, ImageNet mean/std.
``radimagenet:FILE``
    A ResNet-50 trained on RadImageNet (Mei et al. 2022): a state dict in torchvision naming,
    the official ``nn.Sequential`` backbone naming (``backbone.0.weight``...) or TorchScript.
    Same preprocessing as resnet50.
``radiomics[:whole|foreground]``
    pyradiomics first-order + GLCM + GLRLM + GLSZM features per image (whole-image mask by
    default, or the foreground > 5 % of the image's range). Features are z-scored with the real
    set's statistics before any metric; their Fréchet distance is the FRD.

Grey images for ImageNet networks: the channel is replicated to 3 channels (other channel counts
than 1 or 3 are first averaged to grey), resized bilinearly (with anti-aliasing when shrinking)
to the network's input size, then normalised the way the weights expect (ImageNet mean/std for
torchvision weights, [-1, 1] for the FID Inception, 0..255 for NVIDIA's TorchScript). Volumes
(N, C, D, H, W): the 2-D networks see axial slices (all of them, or 16 evenly spaced when there
are more) and a volume's feature is the mean of its slices' features.

When no FILE is given, the torch hub cache (``torch.hub.get_dir()/checkpoints``) is searched for
the standard file names below; otherwise the error names the file and where to get it.
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from medgen.errors import UserError

__all__ = [
    "EXTRACTORS",
    "WEIGHTS_HELP",
    "FeatureExtractor",
    "RadiomicsExtractor",
    "TorchImageExtractor",
    "get_extractor",
    "parse_feature_specs",
]

EXTRACTORS = ("domain", "inception", "resnet50", "radimagenet", "radiomics")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_SLICES = 16

#: Where users get each weights file (also in docs/evaluation.md); file names searched in the hub cache.
WEIGHTS_HELP: dict[str, dict[str, Any]] = {
    "inception": {
        "files": ["pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth",
                  "inception-2015-12-05.pt", "inception_v3_google-0cc3c7bd.pth"],
        "where": ("the FID Inception weights of pytorch-fid "
                  "(https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth; "
                  "torch-fidelity's weights-inception-2015-12-05-6726825d.pth is the same file) or NVIDIA's TorchScript "
                  "inception-2015-12-05.pt used by clean-fid "
                  "(https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt)"),
    },
    "resnet50": {
        "files": ["resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth", "resnet50-19c8e357.pth"],
        "where": ("torchvision's ImageNet ResNet-50 weights "
                  "(https://download.pytorch.org/models/resnet50-11ad3fa6.pth or .../resnet50-0676ba61.pth)"),
    },
    "radimagenet": {
        "files": ["RadImageNet-ResNet50.pt", "radimagenet_resnet50.pt", "ResNet50.pt"],
        "where": ("the RadImageNet ResNet-50 PyTorch weights from the RadImageNet authors "
                  "(https://github.com/BMEII-AI/RadImageNet, 'RadImageNet_pytorch/ResNet50.pt'); save its "
                  "state_dict() or a TorchScript export if it is a pickled model"),
    },
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureExtractor:
    """Images (N, C, *spatial) in [0, 1] -> features (N, F). Subclasses set the attributes."""

    name: str = ""
    weights: Path | None = None
    dim: int | None = None
    #: z-score features with the real set's statistics before metrics (radiomics: mixed units)
    standardise: bool = False
    preprocessing: str = ""

    def __call__(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        out = {"name": self.name, "weights": str(self.weights) if self.weights else None, "dim": self.dim,
               "preprocessing": self.preprocessing, "standardised": self.standardise}
        if self.weights is not None and Path(self.weights).is_file():
            out["weights_sha256"] = _sha256(Path(self.weights))
        return out


# ----------------------------------------------------------------------------------------------
# spec parsing and weights lookup


def parse_feature_specs(spec: str | Sequence[str] | None) -> list[tuple[str, str | None]]:
    """'domain' / 'inception:/w/pt.pth' / 'domain,radiomics' -> [(name, arg or None), ...]."""
    if spec is None:
        return [("domain", None)]
    items = [spec] if isinstance(spec, str) else list(spec)
    parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    if not parts:
        raise UserError("--features is empty; choose from " + ", ".join(EXTRACTORS))
    out = []
    for part in parts:
        name, sep, arg = part.partition(":")
        name = name.strip().lower()
        if name not in EXTRACTORS:
            import difflib

            hint = difflib.get_close_matches(name, EXTRACTORS, n=1)
            raise UserError(f"unknown feature extractor '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                            + f"; choose from {', '.join(EXTRACTORS)} (NAME or NAME:PATH)")
        out.append((name, arg.strip() or None if sep else None))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise UserError(f"--features names an extractor twice: {','.join(names)}")
    return out


def _hub_checkpoints() -> Path | None:
    try:
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints"
    except Exception:  # noqa: BLE001 - no hub dir is not an error
        return None


def resolve_weights(name: str, arg: str | None) -> Path:
    """The weights file for an ImageNet-style extractor: the given path, else a standard file name
    in the torch hub cache; a clear UserError naming the file and where to get it otherwise."""
    help_ = WEIGHTS_HELP[name]
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


def _load_torchscript(path: Path):
    import torch

    import warnings

    try:
        with warnings.catch_warnings():  # torch >= 2.10 flags torch.jit as deprecated; the files still load
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:  # noqa: BLE001 - any load failure is the user's file
        raise UserError(f"cannot load TorchScript file ({err.__class__.__name__}: {str(err)[:200]})", path) from None


def _load_state_dict(path: Path) -> dict:
    """Tensors only: safetensors, or a PyTorch pickle read with weights_only=True (refuses code)."""
    from medgen.engine.checkpoint import load_weights_file

    return load_weights_file(path, allow_pickle=True)


def _torchvision(name: str):
    from medgen.compat import import_torchvision

    tv = import_torchvision()
    if tv is None:
        raise UserError(f"the '{name}' feature extractor with a state-dict weights file needs torchvision "
                        "(pip install --no-deps torchvision matching your torch, e.g. torchvision==0.28.0 for torch 2.13), "
                        "or give a TorchScript export of the network instead")
    return tv


# ----------------------------------------------------------------------------------------------
# 2-D ImageNet-style networks


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


def _nvidia_style(module) -> bool:
    try:
        return "return_features" in str(module.forward.schema)
    except Exception:  # noqa: BLE001 - traced modules have no named arguments
        return False


def _check_loaded(name: str, path: Path, result) -> None:
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


def _strip_prefixes(sd: dict) -> dict:
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


def _resnet50(name: str, path: Path, device: Any) -> TorchImageExtractor:
    prep_text = "grey->3 channels, bilinear resize to 224x224, ImageNet mean/std"
    if is_torchscript(path):
        net = _load_torchscript(path)
        return TorchImageExtractor(name, net, path, 224, "imagenet", prep_text + "; TorchScript output pooled to (N, F)",
                                   "torchscript", device)
    import torch

    sd = _strip_prefixes(_load_state_dict(path))
    tv = _torchvision(name)
    net = tv.models.resnet50(weights=None)
    net.fc = torch.nn.Identity()
    res = net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")}, strict=False)
    _check_loaded(name, path, res)
    net.eval()
    return TorchImageExtractor(name, net, path, 224, "imagenet", prep_text + "; 2048-d global-average-pooled penultimate layer",
                               "torchvision-resnet50", device)


def _fid_inception(tv, sd: dict):
    """torchvision's Inception3 with the blocks of the TF FID graph (as pytorch-fid rebuilds it):
    average pools that exclude padding, and a max pool in the last block."""
    import torch
    import torch.nn.functional as F
    from torchvision.models import inception as inc

    def pool_avg(x):
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    class FIDInceptionA(inc.InceptionA):
        def _forward(self, x):
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return [self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)), b3, self.branch_pool(pool_avg(x))]

    class FIDInceptionC(inc.InceptionC):
        def _forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = self.branch7x7dbl_1(x)
            for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
                bd = layer(bd)
            return [self.branch1x1(x), b7, bd, self.branch_pool(pool_avg(x))]

    class FIDInceptionE(inc.InceptionE):
        max_pool = False

        def _forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else pool_avg(x)
            return [self.branch1x1(x), b3, bd, self.branch_pool(pooled)]

    class FIDInceptionE2(FIDInceptionE):
        max_pool = True

    net = inc.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE(1280)
    net.Mixed_7c = FIDInceptionE2(2048)
    return net


def _inception(path: Path, device: Any) -> TorchImageExtractor:
    if is_torchscript(path):
        net = _load_torchscript(path)
        if _nvidia_style(net):
            return TorchImageExtractor("inception", net, path, 299, "0to255",
                                       "grey->3 channels, bilinear resize to 299x299, values 0..255 (NVIDIA TorchScript, return_features=True)",
                                       "nvidia", device)
        return TorchImageExtractor("inception", net, path, 299, "minus1to1",
                                   "grey->3 channels, bilinear resize to 299x299, scaled to [-1, 1] (TorchScript)",
                                   "torchscript", device)
    import torch

    sd = _strip_prefixes(_load_state_dict(path))
    tv = _torchvision("inception")
    fc = sd.get("fc.weight")
    if fc is not None and fc.shape[0] == 1008:  # the TF FID graph (pytorch-fid / torch-fidelity weights)
        net = _fid_inception(tv, sd)
        prep, variant = "minus1to1", "fid-inception-2015-12-05"
        text = "grey->3 channels, bilinear resize to 299x299, scaled to [-1, 1]; 2048-d pool3 features (FID Inception)"
    else:  # torchvision ImageNet Inception-v3: expects ImageNet-normalised input (transform_input)
        net = tv.models.inception_v3(weights=None, aux_logits=any(k.startswith("AuxLogits.") for k in sd),
                                     init_weights=False, transform_input=True)
        prep, variant = "imagenet", "torchvision-inception_v3"
        text = ("grey->3 channels, bilinear resize to 299x299, ImageNet mean/std; 2048-d pool features of torchvision's "
                "ImageNet Inception-v3 (NOT the FID Inception: not comparable with published FIDs)")
    res = net.load_state_dict(sd, strict=False)
    _check_loaded("inception", path, res)
    net.fc = torch.nn.Identity()
    net.eval()
    return TorchImageExtractor("inception", net, path, 299, prep, text, variant, device)


# ----------------------------------------------------------------------------------------------
# radiomics (pyradiomics)

RADIOMICS_CLASSES = ("firstorder", "glcm", "glrlm", "glszm")


def _radiomics_one(args) -> dict:
    img, settings, classes, mask_mode = args
    import logging

    import SimpleITK as sitk
    import radiomics
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    ext = _RADIOMICS_CACHE.get((tuple(sorted(settings.items())), classes))
    if ext is None:
        ext = featureextractor.RadiomicsFeatureExtractor(**settings)
        ext.disableAllFeatures()
        for c in classes:
            ext.enableFeatureClassByName(c)
        _RADIOMICS_CACHE[(tuple(sorted(settings.items())), classes)] = ext
    vol = img.astype(np.float64)
    # A one-pixel border outside the mask: pyradiomics refuses a mask that covers everything.
    if vol.ndim == 2:  # (1, H, W): force2D takes the one slice along the first axis
        vol = vol[None]
        pad = ((0, 0), (1, 1), (1, 1))
        inner = (slice(None), slice(1, -1), slice(1, -1))
    else:
        pad = 1
        inner = (slice(1, -1),) * 3
    padded = np.pad(vol, pad, mode="edge")
    mask = np.zeros(padded.shape, dtype=np.uint8)
    if mask_mode == "foreground":
        lo, hi = float(vol.min()), float(vol.max())
        fg = vol > lo + 0.05 * (hi - lo)
        if fg.sum() < 16:  # nothing (or almost nothing) above background: use the whole image
            fg = np.ones_like(fg)
        mask[inner] = fg
    else:
        mask[inner] = 1
    result = ext.execute(sitk.GetImageFromArray(padded), sitk.GetImageFromArray(mask))
    return {k: float(v) for k, v in result.items() if k.startswith("original_")}


_RADIOMICS_CACHE: dict = {}


class RadiomicsExtractor(FeatureExtractor):
    """pyradiomics first-order + texture features (FRD when fed to the Fréchet distance).

    Intensities are discretised with a fixed bin width over [0, 1] (``bin_width``, 1/64 by default:
    fixed widths keep texture features comparable between images, unlike a per-image bin count).
    2-D images use pyradiomics' ``force2D``; volumes are analysed in 3-D. A whole-image mask by
    default (``mask="foreground"``: pixels above 5 % of the image's range). Images are processed in
    ``workers`` processes (default: 1 below 64 images, else up to 4).
    """

    name = "radiomics"
    standardise = True

    def __init__(self, mask: str = "whole", bin_width: float = 1.0 / 64, classes: Sequence[str] = RADIOMICS_CLASSES,
                 workers: int | None = None):
        try:
            import radiomics  # noqa: F401
        except ImportError:
            raise UserError("the 'radiomics' feature extractor needs pyradiomics: "
                            "pip install --no-build-isolation pyradiomics==3.0.1 (after numpy, setuptools, wheel)") from None
        if mask not in ("whole", "foreground"):
            raise UserError(f"radiomics mask must be 'whole' or 'foreground', got '{mask}' (use --features radiomics:foreground)")
        self.mask = mask
        self.bin_width = float(bin_width)
        self.classes = tuple(classes)
        self.workers = workers
        self.feature_names: list[str] = []
        self.preprocessing = (f"pyradiomics {', '.join(self.classes)} features, {mask} mask, fixed bin width {self.bin_width:g} "
                              "on [0, 1] intensities, force2D for 2-D images; z-scored with the real set's statistics")

    def _settings(self, spatial_dims: int) -> dict:
        return {"binWidth": self.bin_width, "force2D": spatial_dims == 2, "force2Ddimension": 0, "label": 1,
                "additionalInfo": False, "preCrop": True}

    def __call__(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim not in (4, 5):
            raise ValueError(f"expected images (N, C, H, W) or (N, C, D, H, W), got shape {images.shape}")
        spatial_dims = images.ndim - 2
        grey = images.mean(axis=1) if images.shape[1] > 1 else images[:, 0]
        settings = self._settings(spatial_dims)
        jobs = [(g, settings, self.classes, self.mask) for g in grey]
        workers = self.workers if self.workers is not None else (1 if len(jobs) < 64 else 4)
        import os

        from medgen.parallel import process_map

        workers = max(1, min(workers, os.cpu_count() or 1))
        rows = list(process_map(_radiomics_one, jobs, workers, min_items=2))
        names = sorted(rows[0]) if rows else []
        if self.feature_names and names != self.feature_names:
            raise AssertionError("radiomics feature names changed between calls")
        self.feature_names = names
        self.dim = len(names)
        return np.array([[r.get(n, np.nan) for n in names] for r in rows], dtype=np.float64).reshape(len(rows), len(names))

    def describe(self) -> dict:
        import radiomics

        return {**super().describe(), "pyradiomics": radiomics.__version__, "classes": list(self.classes),
                "mask": self.mask, "bin_width": self.bin_width, "n_features": self.dim}


# ----------------------------------------------------------------------------------------------
# z-scoring with the real set's statistics


def standardise(real: np.ndarray, *others: np.ndarray) -> tuple[list[np.ndarray], dict]:
    """z-score every set with the real set's mean/std per feature (std 0 -> 1). Features that are
    not finite for some real image are dropped; non-finite values elsewhere become the real mean."""
    finite = np.all(np.isfinite(real), axis=0)
    mu = real[:, finite].mean(axis=0)
    sd = real[:, finite].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    out, replaced = [], 0
    for f in (real, *others):
        g = f[:, finite]
        bad = ~np.isfinite(g)
        replaced += int(bad.sum())
        g = np.where(bad, mu, g)
        out.append((g - mu) / sd)
    info = {"method": "z-score with the real set's mean and std", "n_features_used": int(finite.sum()),
            "n_features_dropped": int((~finite).sum()), "non_finite_values_replaced": replaced}
    return out, info


# ----------------------------------------------------------------------------------------------


def get_extractor(name: str, arg: str | None = None, *, domain_factory: Callable[[str | None], FeatureExtractor] | None = None,
                  device: Any = None) -> FeatureExtractor:
    """Build the extractor ``name`` (see the module docstring). ``domain`` needs ``domain_factory``
    (the orchestration knows which training images to use); it is called with ``arg``."""
    if name == "domain":
        if arg:
            from medgen.evaluation.domain import load_domain_extractor

            return load_domain_extractor(Path(arg).expanduser(), device=device)
        if domain_factory is None:
            raise UserError("the 'domain' feature extractor needs training images (a run or a prepared dataset), "
                            "or a cached file: --features domain:PATH")
        return domain_factory(arg)
    if name == "radiomics":
        return RadiomicsExtractor(mask=arg or "whole")
    if name not in WEIGHTS_HELP:
        raise UserError(f"unknown feature extractor '{name}'; choose from {', '.join(EXTRACTORS)}")
    path = resolve_weights(name, arg)
    if name == "inception":
        return _inception(path, device)
    return _resnet50(name, path, device)
