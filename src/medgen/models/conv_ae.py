"""Convolutional autoencoder for unsupervised anomaly detection (S003).

S003: encoder = the convolutional layers of VGG16 pretrained on ImageNet, frozen (grey images
replicated to 3 channels); decoder = upsampling + conv + ReLU blocks, final conv + sigmoid;
loss MAE; trained on normal images only, so a lesion reconstructs badly and shows up in the
error map (``medgen detect``).

Encoders (``encoder``):
- ``vgg16``: torchvision's VGG16 ``features`` (``weights=None``: nothing is downloaded), cut after
  ``encoder_layers`` of its 5 conv blocks (each block ends with a 2x max-pool; 5 blocks turn
  128x128 into 4x4x512, 3 blocks turn 64x64 into 8x8x256). Grey input is replicated to 3 channels
  and normalised with the ImageNet mean/std. ImageNet weights come only from a LOCAL file
  (``encoder_weights: PATH``, safetensors or a torchvision state dict such as
  ``vgg16-397923af.pth``, read with ``torch.load(weights_only=True)``; ``auto`` looks in the places
  ``medgen weights`` lists). Without weights the encoder is trained from scratch. A missing file
  is an error, never a silent switch to random weights. When torchvision is not installed the
  same layer list is built here (identical parameter names, so the same files load).
- ``small``: a light conv encoder (conv 3x3 + ReLU + max-pool per level, ``channels``) for CPUs
  and for 3D.

``freeze_encoder`` (default: true exactly when ImageNet weights are loaded) keeps the encoder
fixed; its parameters are then left out of the optimiser. ``latent_channels`` adds a trainable
1x1 conv bottleneck after the encoder (a narrower code makes the decoder less able to copy
lesions). ``input_noise`` trains a denoising autoencoder (Gaussian noise of that std, optionally
at a coarse ``noise_resolution`` and upsampled, added to the input while training).

Which encoder weights a run used is printed at train start (``notes()``), stored in the model
(buffer ``encoder_pretrained``, saved in every checkpoint) and reported by ``describe()``, so
``medgen detect`` writes it into the anomaly metrics.
"""
from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from medgen.errors import UserError
from medgen.models.base import FamilyParams, GenerativeModel

# torchvision's VGG16 ("D") layer list: conv widths, "M" = 2x max-pool (the end of a block)
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG16_WEIGHTS_FILE = "vgg16-397923af.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# set while a trained run is being loaded: its checkpoint holds the encoder, the file is not needed
_RESTORING = contextvars.ContextVar("medgen_conv_ae_restoring", default=False)


@contextlib.contextmanager
def restoring_from_checkpoint():
    """Build conv-ae models without reading ``encoder_weights`` (the checkpoint loaded next has them)."""
    token = _RESTORING.set(True)
    try:
        yield
    finally:
        _RESTORING.reset(token)


class ConvAEParams(FamilyParams):
    encoder: Literal["vgg16", "small"] = "vgg16"
    encoder_weights: str | None = None  # local ImageNet VGG16 weights (PATH or "auto"); None: from scratch
    freeze_encoder: bool | None = None  # None: frozen exactly when weights are loaded (S003)
    encoder_layers: int = Field(5, ge=1, le=5)  # VGG16 conv blocks kept (each halves the size)
    channels: list[int] = [32, 64, 128]  # small encoder: channels per level
    decoder_channels: list[int] | None = None  # per upsampling block, deep to shallow (default: mirror)
    latent_channels: int | None = Field(None, ge=1)  # 1x1 conv bottleneck after the encoder
    upsample: Literal["nearest", "bilinear"] = "nearest"
    loss: Literal["l1", "mse"] = "l1"  # S003: MAE
    # Once every logit has sunk far below 0 (a diverged start, e.g. too high a rate for an encoder
    # trained from scratch on mostly-black padded images) the sigmoid's gradient is gone and the model
    # outputs black for every input; linear has no such dead zone but detects worse (docs/anomaly-detection.md)
    output: Literal["sigmoid", "linear"] = "sigmoid"
    input_noise: float = Field(0.0, ge=0)  # denoising AE: std of the noise added while training
    noise_resolution: int | None = Field(None, ge=1)  # coarse noise: drawn at this size, upsampled


def vgg16_features(torchvision_ok: bool = True) -> nn.Sequential:
    """VGG16's ``features`` without weights: torchvision's own definition, or the same layer list."""
    if torchvision_ok:
        from medgen.compat import import_torchvision

        try:
            tv = import_torchvision()
        except Exception:  # a broken install must not stop medgen: the layer list below is the same
            tv = None
        if tv is not None:
            return tv.models.vgg16(weights=None).features
    layers: list[nn.Module] = []
    c_in = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c_in = int(v)
    return nn.Sequential(*layers)


def vgg16_cut(blocks: int) -> tuple[int, int]:
    """(number of ``features`` layers, output channels) for the first ``blocks`` VGG16 blocks."""
    pools = [i for i, v in enumerate(VGG16_CFG) if v == "M"]
    end = pools[blocks - 1]
    n_layers = sum(1 if v == "M" else 2 for v in VGG16_CFG[:end + 1])
    out_ch = [v for v in VGG16_CFG[:end] if v != "M"][-1]
    return n_layers, int(out_ch)


def resolve_encoder_weights(spec: str | None) -> Path | None:
    """The weights file to read, or None for training from scratch. Missing files are errors."""
    if spec is None or str(spec).strip().lower() in ("", "none", "null", "scratch"):
        return None
    from medgen.weights import hub_dir, weights_dir

    if str(spec).strip().lower() == "auto":
        for p in (weights_dir() / VGG16_WEIGHTS_FILE, hub_dir() / VGG16_WEIGHTS_FILE):
            if p.exists():
                return p
        return None
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(
            f"VGG16 encoder weights not found: '{path}' does not exist. Put the torchvision ImageNet file "
            f"{VGG16_WEIGHTS_FILE} (from download.pytorch.org/models/{VGG16_WEIGHTS_FILE}) or a safetensors copy there, "
            f"or in {weights_dir()} and use model.encoder_weights=auto; or unset model.encoder_weights to train the "
            "encoder from scratch (see `medgen weights`)")
    return path


def load_vgg16_weights(features: nn.Sequential, path: Path) -> int:
    """Fill the (possibly cut) VGG16 ``features`` from a torchvision state dict or a features-only file."""
    from medgen.weights import load_weights_file

    state = load_weights_file(path, allow_pickle=True)
    clean = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        if k.startswith("features."):
            clean[k[len("features."):]] = v
        elif k.startswith("encoder.features."):
            clean[k[len("encoder.features."):]] = v
        elif k.split(".")[0].isdigit():
            clean[k] = v
    own = features.state_dict()
    missing = [k for k in own if k not in clean]
    bad = [k for k in own if k in clean and clean[k].shape != own[k].shape]
    if missing or bad:
        detail = (f"missing {missing[:3]}" if missing else "") + (f" shape mismatch {bad[:3]}" if bad else "")
        raise UserError(f"not a VGG16 weights file: {detail.strip()} (expected torchvision keys like features.0.weight)", path)
    features.load_state_dict({k: clean[k] for k in own})
    return len(own)


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _pool(dims: int):
    return nn.MaxPool2d if dims == 2 else nn.MaxPool3d


class VGG16Encoder(nn.Module):
    """Grey -> 3 channels, ImageNet normalisation, the first ``blocks`` VGG16 conv blocks."""

    def __init__(self, in_channels: int, blocks: int):
        super().__init__()
        if in_channels not in (1, 3):
            raise UserError(f"the VGG16 encoder takes grey or RGB images, not {in_channels} channels (use model.encoder=small)")
        n_layers, self.out_channels = vgg16_cut(blocks)
        self.features = nn.Sequential(*list(vgg16_features())[:n_layers])
        self.in_channels = in_channels
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        if self.in_channels == 1:
            x = x.expand(-1, 3, *x.shape[2:])
        return self.features((x - self.mean) / self.std)


class SmallEncoder(nn.Module):
    def __init__(self, in_channels: int, channels: list[int], dims: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for ch in channels:
            layers += [_conv(dims)(c, ch, 3, padding=1), nn.ReLU(inplace=True), _pool(dims)(2)]
            c = ch
        self.features = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x):
        return self.features(x)


class Decoder(nn.Module):
    """Per level: upsample 2x, conv 3x3, ReLU; then conv 3x3 to the image channels and a sigmoid."""

    def __init__(self, in_channels: int, channels: list[int], out_channels: int, dims: int, mode: str,
                 output: str = "sigmoid"):
        super().__init__()
        self.squash = torch.sigmoid if output == "sigmoid" else (lambda t: t)
        layers: list[nn.Module] = []
        c = in_channels
        interp = mode if mode == "nearest" else ("bilinear" if dims == 2 else "trilinear")
        for ch in channels:
            layers += [nn.Upsample(scale_factor=2, mode=interp), _conv(dims)(c, ch, 3, padding=1), nn.ReLU(inplace=True)]
            c = ch
        self.blocks = nn.Sequential(*layers)
        self.out = _conv(dims)(c, out_channels, 3, padding=1)

    def forward(self, z):
        return self.squash(self.out(self.blocks(z)))


class ConvAutoencoder(GenerativeModel):
    Params = ConvAEParams
    stages = ("autoencoder",)
    can_sample = False
    can_reconstruct = True
    can_score = True
    detectors = ("reconstruct", "model")

    def __init__(self, params: ConvAEParams, info):
        super().__init__(params, info)
        p, dims = params, info.spatial_dims
        self._notes: list[str] = []
        if p.encoder == "vgg16":
            if dims != 2:
                raise UserError("the VGG16 encoder is 2D; use model.encoder=small for volumes")
            self.encoder = VGG16Encoder(info.channels, p.encoder_layers)
            levels = p.encoder_layers
            mirror = [int(c) for c in (64, 128, 256, 512, 512)[:levels]][::-1]
        else:
            if not p.channels:
                raise UserError("model.channels must list at least one level for the small encoder")
            self.encoder = SmallEncoder(info.channels, p.channels, dims)
            levels = len(p.channels)
            mirror = list(p.channels)[::-1]
        down = 2 ** levels
        if any(s % down for s in info.size):
            raise UserError(f"image size {tuple(info.size)} is not divisible by {down} ({levels} encoder levels); "
                            "prepare the data at a multiple of it or use fewer levels")
        dec = list(p.decoder_channels) if p.decoder_channels is not None else mirror
        if len(dec) != levels:
            raise UserError(f"model.decoder_channels needs {levels} entries (one per encoder level), got {len(dec)}")
        c = self.encoder.out_channels
        self.bottleneck = None
        if p.latent_channels:
            self.bottleneck = nn.Sequential(_conv(dims)(c, p.latent_channels, 1), nn.ReLU(inplace=True))
            c = p.latent_channels
        self.decoder = Decoder(c, dec, info.channels, dims, p.upsample, p.output)
        self.register_buffer("encoder_pretrained", torch.zeros(()))  # 1 = ImageNet weights were loaded (kept in checkpoints)
        self._weights_path: Path | None = None
        self._setup_encoder()
        self.frozen = p.freeze_encoder if p.freeze_encoder is not None else self._weights_path is not None
        if self.frozen:
            self.encoder.requires_grad_(False)
        if not _RESTORING.get():
            if self.frozen and self._weights_path is None:
                self._notes.append("encoder FROZEN WITHOUT pretrained weights (freeze_encoder: true): a fixed random encoder")
            elif self.frozen:
                self._notes.append("encoder frozen (S003); only the decoder trains")
            elif self._weights_path is not None:
                self._notes.append("encoder fine-tuned from the ImageNet weights with the decoder (freeze_encoder: false)")
            else:
                self._notes.append("encoder trained from scratch with the decoder")

    def _setup_encoder(self) -> None:
        p = self.params
        if p.encoder == "small":
            if p.encoder_weights:
                raise UserError("model.encoder_weights is for the VGG16 encoder; the small encoder trains from scratch")
            self._notes.append(f"encoder: small conv encoder {p.channels} (no pretrained weights)")
            return
        what = f"VGG16 conv blocks 1-{p.encoder_layers} ({self.encoder.out_channels} channels out)"
        if _RESTORING.get():
            self._notes.append(f"encoder: {what}; weights restored from the run's checkpoint")
            return
        path = resolve_encoder_weights(p.encoder_weights)
        if path is None:
            why = ("model.encoder_weights=auto found no " + VGG16_WEIGHTS_FILE) if p.encoder_weights else "model.encoder_weights is not set"
            self._notes.append(f"encoder: {what}, NO ImageNet weights ({why}). S003 used frozen "
                               "ImageNet weights; give a local file with --set model.encoder_weights=PATH (see `medgen weights`)")
            return
        n = load_vgg16_weights(self.encoder.features, path)
        self._weights_path = path
        self.encoder_pretrained.fill_(1.0)
        self._notes.append(f"encoder: {what}, ImageNet weights from {path} ({n} tensors)")

    # --- description --------------------------------------------------------------------------
    def notes(self) -> list[str]:
        return list(self._notes)

    def describe(self) -> dict:
        p = self.params
        pretrained = bool(float(self.encoder_pretrained) > 0.5)
        frozen = p.freeze_encoder if p.freeze_encoder is not None else pretrained
        return {"encoder": p.encoder, "encoder_layers": p.encoder_layers if p.encoder == "vgg16" else len(p.channels),
                "encoder_weights": ("imagenet" if pretrained else "none (random, frozen)" if frozen else "none (trained from scratch)"),
                "encoder_weights_file": p.encoder_weights, "encoder_frozen": bool(frozen),
                "latent_channels": p.latent_channels, "loss": p.loss}

    # --- training -----------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()  # a frozen encoder never switches to training behaviour
        return self

    def optimizers(self, stage, cfg):
        params = [q for q in self.parameters() if q.requires_grad]
        return {"main": torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)}

    def forward(self, x):
        z = self.encoder(x)
        if self.bottleneck is not None:
            z = self.bottleneck(z)
        return self.decoder(z)

    def _noise(self, x, ctx):
        p = self.params
        if p.noise_resolution:
            coarse = (x.shape[0], x.shape[1], *[p.noise_resolution] * (x.dim() - 2))
            n = ctx.randn(coarse)
            n = F.interpolate(n, size=x.shape[2:], mode="bilinear" if x.dim() == 4 else "trilinear", align_corners=False)
        else:
            n = ctx.randn(x.shape)
        return p.input_noise * n

    def _loss(self, recon, x):
        return F.l1_loss(recon, x) if self.params.loss == "l1" else F.mse_loss(recon, x)

    def training_step(self, batch, stage, ctx):
        x = batch["image"]
        x_in = (x + self._noise(x, ctx)) if self.params.input_noise > 0 else x
        with ctx.autocast():
            recon = self(x_in)
        loss = self._loss(recon.float(), x)
        ctx.backward(loss)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def validation_step(self, batch, stage):
        x = batch["image"]
        recon = self(x)
        return {"mae": float(F.l1_loss(recon, x)), "mse": float(F.mse_loss(recon, x))}

    # --- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x):
        return self(x)

    @torch.no_grad()
    def sample(self, n, labels=None, steps=None, generator=None, **kwargs):
        raise UserError("conv-ae is an autoencoder for anomaly detection: it reconstructs images but does not generate "
                        "new ones (use `medgen detect RUN`)")
