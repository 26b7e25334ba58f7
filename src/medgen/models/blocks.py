"""Building blocks shared by the GAN, VAE and VAE-GAN families (S004, S001).

Every network here is dimension-agnostic (``spatial_dims`` 2 or 3 picks Conv2d/Conv3d, ...), as in
MONAI. Depth follows the image size: each resolution level halves every spatial axis that is still
larger than 4 and even (``level_strides``), so 16x16 gets 2 levels, 128x128 gets 5 and an 8x64x64
volume gets 4 levels whose first one also halves the depth. Upsampling paths mirror the strides
exactly, so the output size always equals the input size.

- ``Generator``: DCGAN generator (Linear -> reshape -> [ConvTranspose | Upsample+Conv] + BatchNorm +
  LeakyReLU per level -> conv -> sigmoid), optionally conditioned by a label embedding.
- ``Discriminator``: Conv + [norm] + LeakyReLU + [Dropout] per level -> [minibatch std] -> Linear logit;
  conditioned by a learned label map concatenated to the image as an extra channel; ``features``
  exposes the intermediate maps (the VAE-GAN's learned similarity).
- ``Encoder`` / ``Decoder``: the S004 VAE: conv blocks (plain, skip or residual) + max-pool per level,
  flatten, [label one-hot], dense -> mu / log-variance; decoder dense -> reshape -> transposed convs.
- ``gradient_penalty``: WGAN-GP's penalty (Gulrajani et al. 2017).
- ``FreezeSchedule``: freeze parameters by name prefix for the first N epochs (S004's transfer).
- ``GANMonitor``: warns once when the discriminator wins outright, the losses diverge or the samples
  collapse (the failures S004 reports).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medgen.errors import UserError

# --- dimension-agnostic layers --------------------------------------------------------------


def conv_cls(spatial_dims: int) -> type[nn.Module]:
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def conv_transpose_cls(spatial_dims: int) -> type[nn.Module]:
    return {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]


def max_pool_cls(spatial_dims: int) -> type[nn.Module]:
    return {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims]


def norm_layer(kind: str, channels: int, spatial_dims: int) -> nn.Module:
    """``batch``, ``instance`` (affine), ``layer`` (over channels and space, per sample: GroupNorm with
    one group, what the WGAN-GP paper means for a critic), ``group`` (up to 8 groups) or ``none``."""
    if kind == "batch":
        return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)
    if kind == "instance":
        return {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims](channels, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm '{kind}'")


def act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=False)


# --- geometry -------------------------------------------------------------------------------


def level_strides(size: Sequence[int], levels: int | None = None, min_size: int = 4) -> list[tuple[int, ...]]:
    """Per-level strides: each level halves the axes still larger than ``min_size`` and even.

    ``levels`` caps the number of levels (a shallower network with a larger bottom)."""
    cur = list(size)
    out: list[tuple[int, ...]] = []
    while levels is None or len(out) < levels:
        s = tuple(2 if (d > min_size and d % 2 == 0) else 1 for d in cur)
        if all(v == 1 for v in s):
            break
        out.append(s)
        cur = [d // v for d, v in zip(cur, s)]
    if not out:
        raise UserError(f"image size {tuple(size)} is too small to down-sample: use at least 8 pixels per side")
    return out


def bottom_size(size: Sequence[int], strides: list[tuple[int, ...]]) -> tuple[int, ...]:
    cur = list(size)
    for s in strides:
        cur = [d // v for d, v in zip(cur, s)]
    return tuple(cur)


def per_level(values: Sequence[int], levels: int, name: str) -> list[int]:
    """A per-level list of exactly ``levels`` entries: longer lists are cut, shorter ones repeat their last value."""
    values = list(values)
    if not values:
        raise UserError(f"model.{name} must not be empty")
    if len(values) >= levels:
        return values[:levels]
    return values + [values[-1]] * (levels - len(values))


# S004's 13/16/19-block encoders, VGG-style: 13 and 16 are the convolutional parts of VGG16 and
# VGG19; 19 continues the pattern (our choice, S004 gives only the count).
VGG_LAYOUTS = {13: [2, 2, 3, 3, 3], 16: [2, 2, 4, 4, 4], 19: [3, 3, 4, 4, 5]}


def blocks_layout(blocks_per_level: Sequence[int] | None, vgg: int | None, levels: int) -> list[int]:
    """Conv blocks per level. A VGG layout with more levels than the image allows folds the extra
    blocks into the deepest level, so the total (the variant's name) stays the same."""
    if vgg is not None:
        layout = list(VGG_LAYOUTS[vgg])
        if len(layout) > levels:
            layout = layout[:levels - 1] + [sum(layout[levels - 1:])]
        return per_level(layout, levels, "vgg")
    return per_level(blocks_per_level or [1], levels, "blocks_per_level")


def _kernel(stride: tuple[int, ...]) -> tuple[int, ...]:
    # kernel 4 / stride 2 / padding 1 exactly halves (or doubles); kernel 3 / stride 1 / padding 1 keeps
    return tuple(4 if s == 2 else 3 for s in stride)


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.'s initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)):
            if getattr(m, "weight", None) is not None:
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)


# --- GAN ------------------------------------------------------------------------------------


class Generator(nn.Module):
    """z (+ label embedding) -> Linear -> (C, *bottom) -> per level up-sampling + BatchNorm + LeakyReLU
    -> conv -> sigmoid, so outputs lie in [0, 1] like the data."""

    def __init__(self, spatial_dims: int, out_channels: int, size: Sequence[int], latent_dim: int,
                 channels: Sequence[int], num_classes: int = 0, embed_dim: int = 32, upsample: str = "transpose",
                 levels: int | None = None):
        super().__init__()
        self.strides = level_strides(size, levels)
        chans = per_level(channels, len(self.strides), "channels")[::-1]  # deepest first
        self.bottom = bottom_size(size, self.strides)
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        in_dim = latent_dim + (embed_dim if num_classes else 0)
        self.fc = nn.Linear(in_dim, chans[0] * math.prod(self.bottom))
        self.fc_norm = nn.Sequential(norm_layer("batch", chans[0], spatial_dims), act())
        Conv, ConvT = conv_cls(spatial_dims), conv_transpose_cls(spatial_dims)
        blocks = []
        c_in = chans[0]
        for i, stride in enumerate(reversed(self.strides)):
            c_out = chans[i + 1] if i + 1 < len(chans) else chans[-1]
            if upsample == "transpose":
                up = ConvT(c_in, c_out, _kernel(stride), stride, 1, bias=False)
            else:
                up = nn.Sequential(nn.Upsample(scale_factor=tuple(float(s) for s in stride), mode="nearest"),
                                   Conv(c_in, c_out, 3, 1, 1, bias=False))
            blocks.append(nn.Sequential(up, norm_layer("batch", c_out, spatial_dims), act()))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out = Conv(c_in, out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is conditional: give labels")
            z = torch.cat([z, self.embed(labels)], dim=1)
        h = self.fc(z).view(z.shape[0], -1, *self.bottom)
        h = self.fc_norm(h)
        for block in self.blocks:
            h = block(h)
        return torch.sigmoid(self.out(h))


class Discriminator(nn.Module):
    """Per level Conv (stride 2) + norm + LeakyReLU + Dropout, then Linear -> one logit (no sigmoid:
    the losses take logits, and a WGAN critic must not squash its output).

    S004's two discriminators are ``norm='none', dropout>0`` (Conv + LeakyReLU + Dropout) and
    ``norm='batch'`` (Conv + BatchNorm + LeakyReLU). The first level never has a norm (DCGAN).
    A conditional discriminator concatenates a learned per-class map to the image as one more channel."""

    def __init__(self, spatial_dims: int, in_channels: int, size: Sequence[int], channels: Sequence[int],
                 num_classes: int = 0, norm: str = "batch", dropout: float = 0.0, levels: int | None = None,
                 minibatch_std: bool = False, projection: bool = False, aux_classes: int = 0, label_map: bool = True):
        super().__init__()
        self.minibatch_std = minibatch_std
        self.strides = level_strides(size, levels)
        chans = per_level(channels, len(self.strides), "channels")
        self.size = tuple(size)
        self.num_classes = num_classes
        self.label_map = nn.Embedding(num_classes, math.prod(size)) if (num_classes and label_map) else None
        Conv = conv_cls(spatial_dims)
        blocks = []
        c_in = in_channels + (1 if self.label_map is not None else 0)
        for i, (stride, c_out) in enumerate(zip(self.strides, chans)):
            layers: list[nn.Module] = [Conv(c_in, c_out, _kernel(stride), stride, 1, bias=(i == 0 or norm == "none"))]
            if i > 0:
                layers.append(norm_layer(norm, c_out, spatial_dims))
            layers.append(act())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*layers))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear((c_in + int(minibatch_std)) * math.prod(bottom_size(size, self.strides)), 1)
        # projection discriminator (Miyato & Koyama 2018): logit += <embed(y), pooled features>
        self.projection = nn.Embedding(num_classes, c_in) if (projection and num_classes) else None
        # AC-GAN (Odena et al. 2017): a second head names the class of the image from the same features
        # (on the flattened features, like the real/fake head: pooling averages a small lesion away)
        self.classifier = nn.Linear(c_in * math.prod(bottom_size(size, self.strides)), aux_classes) if aux_classes else None

    def _input(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.label_map is None:
            return x
        if labels is None:
            raise ValueError("this discriminator is conditional: give labels")
        return torch.cat([x, self.label_map(labels).view(x.shape[0], 1, *self.size)], dim=1)

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(output of every level, logit)."""
        feats, logit, _ = self.heads(x, labels)
        return feats, logit

    def heads(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        """(output of every level, real/fake logit, class logits or None without the AC-GAN head)."""
        h = self._input(x, labels)
        feats = []
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        pooled = h.flatten(2).sum(2)
        classes = self.classifier(h.flatten(1)) if self.classifier is not None else None
        if self.minibatch_std:
            h = torch.cat([h, batch_std(h, labels if self.num_classes else None)], dim=1)
        logit = self.head(h.flatten(1)).squeeze(1)
        if self.projection is not None:
            logit = logit + (self.projection(labels) * pooled).sum(1)
        return feats, logit, classes

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.features(x, labels)[1]


def batch_std(h: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Karras et al. 2018's minibatch standard deviation as one more channel: the spread of the batch's
    features, so the discriminator can see a batch of near-identical samples (mode collapse). With
    labels it is measured within each class (mean over classes with 2+ samples): a generator that
    collapses to one image per class would otherwise hide behind the differences between classes."""
    b = h.shape[0]
    if b < 2:
        std = h.new_zeros(())
    elif labels is None:
        std = h.float().std(dim=0, unbiased=False).mean()
    else:
        parts = [h[labels == c].float().std(dim=0, unbiased=False).mean() for c in labels.unique() if int((labels == c).sum()) > 1]
        std = torch.stack(parts).mean() if parts else h.new_zeros(())
    return std.to(h.dtype).expand(b, 1, *h.shape[2:])


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None,
                     rng=None) -> tuple[torch.Tensor, torch.Tensor]:
    """WGAN-GP's penalty E[(||grad_x critic(x_hat)||_2 - 1)^2] at x_hat = eps*real + (1-eps)*fake,
    eps ~ U[0, 1] per sample (Gulrajani et al. 2017, eq. 3). Returns (penalty, mean gradient norm).

    ``rng``: a ``StepContext`` (its seeded generator: resumable runs), a ``torch.Generator`` or None.
    ``critic`` is called as ``critic(x_hat, labels)`` when labels are given, else ``critic(x_hat)``."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    if rng is None:
        eps = torch.rand(shape, device=real.device)
    elif isinstance(rng, torch.Generator):
        eps = torch.rand(shape, generator=rng, device=rng.device).to(real.device)
    else:
        eps = rng.rand(shape).to(real.device)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x_hat, labels) if labels is not None else critic(x_hat)
    grad, = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return ((norm - 1) ** 2).mean(), norm.mean().detach()


# --- VAE ------------------------------------------------------------------------------------


class ConvUnit(nn.Module):
    """Conv 3 + norm + LeakyReLU; ``residual`` adds the input (through a 1x1 conv when the width changes)."""

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, norm: str, residual: bool = False):
        super().__init__()
        Conv = conv_cls(spatial_dims)
        self.conv = Conv(c_in, c_out, 3, 1, 1, bias=norm == "none")
        self.norm = norm_layer(norm, c_out, spatial_dims)
        self.act = act()
        self.shortcut = None
        if residual:
            self.shortcut = nn.Identity() if c_in == c_out else Conv(c_in, c_out, 1, 1, 0, bias=False)

    def forward(self, x):
        h = self.norm(self.conv(x))
        if self.shortcut is not None:
            h = h + self.shortcut(x)
        return self.act(h)


class ConvStack(nn.Module):
    """``n`` conv units at one resolution. ``plain``: a chain; ``residual``: each unit has an identity
    shortcut (ResNet); ``skip``: the stack's input is concatenated to its output and fused by a 1x1
    conv (a skip connection around the level). Skips stay inside the encoder or the decoder: an
    encoder-to-decoder (U-Net) skip would let the decoder bypass the latent, and sampling from the
    prior would then have nothing to feed it."""

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, n: int, norm: str, block: str):
        super().__init__()
        units, c = [], c_in
        for _ in range(n):
            units.append(ConvUnit(spatial_dims, c, c_out, norm, residual=block == "residual"))
            c = c_out
        self.units = nn.Sequential(*units)
        self.fuse = None
        if block == "skip" and n > 0:
            self.fuse = nn.Sequential(conv_cls(spatial_dims)(c_in + c_out, c_out, 1, 1, 0, bias=norm == "none"),
                                      norm_layer(norm, c_out, spatial_dims), act())
        self.out_channels = c_out if n > 0 else c_in

    def forward(self, x):
        h = self.units(x)
        if self.fuse is not None:
            h = self.fuse(torch.cat([x, h], dim=1))
        return h


class Encoder(nn.Module):
    """S004's encoder: per level ``blocks`` conv units then max-pooling; flatten; [label one-hot];
    dense -> mu, log-variance. Parameter names (``convs.*``, ``dense``, ``mu``, ``logvar``) are the same
    with and without the label, so a VAE's conv layers load into a CVAE (``--init-from``)."""

    def __init__(self, spatial_dims: int, in_channels: int, size: Sequence[int], latent_dim: int,
                 channels: Sequence[int], blocks: Sequence[int], num_classes: int = 0, hidden_dim: int | None = 256,
                 norm: str = "batch", block: str = "plain", levels: int | None = None):
        super().__init__()
        self.strides = level_strides(size, levels)
        n = len(self.strides)
        chans, blocks = per_level(channels, n, "channels"), per_level(blocks, n, "blocks_per_level")
        self.num_classes = num_classes
        Pool = max_pool_cls(spatial_dims)
        convs, c = [], in_channels
        for stride, c_out, k in zip(self.strides, chans, blocks):
            stack = ConvStack(spatial_dims, c, c_out, max(k, 1), norm, block)
            convs.append(nn.Sequential(stack, Pool(stride, stride)))
            c = stack.out_channels
        self.convs = nn.ModuleList(convs)
        self.flat_dim = c * math.prod(bottom_size(size, self.strides))
        in_dim = self.flat_dim + num_classes
        if hidden_dim:
            self.dense = nn.Sequential(nn.Linear(in_dim, hidden_dim), act())
            in_dim = hidden_dim
        else:
            self.dense = nn.Identity()
        self.mu = nn.Linear(in_dim, latent_dim)
        self.logvar = nn.Linear(in_dim, latent_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for level in self.convs:
            h = level(h)
        h = h.flatten(1)
        if self.num_classes:
            if labels is None:
                raise ValueError("this encoder is conditional: give labels")
            h = torch.cat([h, F.one_hot(labels, self.num_classes).to(h.dtype)], dim=1)
        h = self.dense(h)
        return self.mu(h), self.logvar(h).clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """z [+ label one-hot] -> dense -> reshape -> per level transposed conv (up-sampling) + norm +
    LeakyReLU and ``blocks - 1`` more conv units -> conv to the image channels. Returns logits; the
    image is their sigmoid."""

    def __init__(self, spatial_dims: int, out_channels: int, size: Sequence[int], latent_dim: int,
                 channels: Sequence[int], blocks: Sequence[int], num_classes: int = 0, norm: str = "batch",
                 block: str = "plain", levels: int | None = None):
        super().__init__()
        self.strides = level_strides(size, levels)
        n = len(self.strides)
        chans = per_level(channels, n, "channels")[::-1]
        blocks = per_level(blocks, n, "blocks_per_level")[::-1]
        self.bottom = bottom_size(size, self.strides)
        self.num_classes = num_classes
        self.dense = nn.Sequential(nn.Linear(latent_dim + num_classes, chans[0] * math.prod(self.bottom)), act())
        self.c0 = chans[0]
        ConvT = conv_transpose_cls(spatial_dims)
        convs, c = [], chans[0]
        for i, (stride, k) in enumerate(zip(reversed(self.strides), blocks)):
            c_out = chans[i + 1] if i + 1 < n else chans[-1]
            up = nn.Sequential(ConvT(c, c_out, _kernel(stride), stride, 1, bias=norm == "none"),
                               norm_layer(norm, c_out, spatial_dims), act())
            stack = ConvStack(spatial_dims, c_out, c_out, k - 1, norm, block)
            convs.append(nn.Sequential(up, stack))
            c = stack.out_channels
        convs.append(conv_cls(spatial_dims)(c, out_channels, 3, 1, 1))
        self.convs = nn.ModuleList(convs)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            if labels is None:
                raise ValueError("this decoder is conditional: give labels")
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        h = self.dense(z).view(z.shape[0], self.c0, *self.bottom)
        for layer in self.convs:
            h = layer(h)
        return h


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) summed over latent dimensions, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Summed over pixels, averaged over the batch (the ELBO's units, as S004's Keras VAE)."""
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif kind == "mse":
        per = (torch.sigmoid(logits) - x) ** 2
    elif kind == "l1":
        per = (torch.sigmoid(logits) - x).abs()
    else:
        raise ValueError(kind)
    return per.flatten(1).sum(dim=1).mean()


# --- training helpers -----------------------------------------------------------------------


class FreezeSchedule:
    """Parameters whose names start with one of ``prefixes`` (at a dot boundary) get
    ``requires_grad=False`` while ``epoch < epochs`` and ``True`` afterwards. Their norm layers are
    kept in eval mode while frozen, so batch-norm running statistics do not move either. (Adam skips
    parameters without a gradient, so frozen weights stay bit-identical.)"""

    def __init__(self, model: nn.Module, prefixes: Sequence[str], epochs: int):
        self.prefixes = list(prefixes)
        self.epochs = epochs
        self.frozen = False
        self.params = [p for n, p in model.named_parameters() if self._match(n)]
        self.modules = [m for n, m in model.named_modules() if n and self._match(n)
                        and isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm))]
        for prefix in self.prefixes:
            if not any(self._match(n, [prefix]) for n, _ in model.named_parameters()):
                tops = sorted({".".join(n.split(".")[:2]) for n, _ in model.named_parameters()})
                raise UserError(f"model.freeze: '{prefix}' names no parameters; prefixes here include: {', '.join(tops)}")

    def _match(self, name: str, prefixes: Sequence[str] | None = None) -> bool:
        return any(name == p or name.startswith(p.rstrip(".") + ".") for p in (prefixes or self.prefixes))

    def on_epoch_start(self, epoch: int) -> None:
        self.frozen = bool(self.prefixes) and epoch < self.epochs
        for p in self.params:
            p.requires_grad_(not self.frozen)

    def before_step(self) -> None:
        """Called at the start of every training step (the trainer puts the model back in train mode)."""
        if self.frozen:
            for m in self.modules:
                m.eval()


class GANMonitor:
    """Watches adversarial training for S004's failures and warns once per kind on the console.

    ``check(name, condition, message, patience)`` returns 1.0 while the condition has held for
    ``patience`` consecutive steps (logged as ``warn_<name>``), else 0.0; ``warnings`` keeps the
    messages (also kept on the model as ``model.warnings``)."""

    def __init__(self, patience: int = 50):
        self.patience = patience
        self.streak: dict[str, int] = {}
        self.warnings: dict[str, str] = {}
        self.collapse_checks = 0
        self.last_diversity = float("nan")

    def check(self, name: str, condition: bool, message: str, patience: int | None = None) -> float:
        streak = self.streak.get(name, 0) + 1 if condition else 0
        self.streak[name] = streak
        active = streak >= (self.patience if patience is None else patience)
        if active and name not in self.warnings:
            from medgen.progress import console

            self.warnings[name] = message
            console().print(f"[yellow]warning: {message}[/yellow]")
        return float(active)

    def diverging(self, losses: dict[str, float], threshold: float) -> float:
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        big = [k for k, v in losses.items() if math.isfinite(v) and abs(v) > threshold]
        nonfinite = self.check("nonfinite", bool(bad), f"non-finite {', '.join(bad) or 'loss'}: the adversarial game diverged "
                               "(try a lower train.lr)", patience=1)
        large = self.check("diverging", bool(big), f"losses {', '.join(big) or ''} above {threshold:g} for "
                           f"{max(self.patience // 5, 1)} steps: training is diverging (S004 saw generator losses in the thousands)",
                           patience=max(self.patience // 5, 1))
        return max(nonfinite, large)

    def collapse(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None, ratio: float = 0.25,
                 every: int = 10) -> float:
        """Mode collapse: the generated batch varies far less than the real one (within each class when
        labels are given: a conditional generator can collapse to one image per class). Not judged
        during the first ``4 * patience`` steps: an untrained generator's output is nearly constant.
        Measured on every ``every``-th step only, the verdict holding in between: the two spreads cost
        2 % of a small GAN's step, and a collapse is a trend over ``patience`` steps, not one batch."""
        self.collapse_checks += 1
        if self.collapse_checks <= 4 * self.patience:
            return 0.0
        checks = max(self.patience // every, 1)  # the patience, counted in measured steps
        if self.collapse_checks % every or real.shape[0] < 2 or fake.shape[0] < 2:
            return float(self.streak.get("mode_collapse", 0) >= checks)
        r = float(batch_std(real.detach(), labels)[0].flatten()[0])
        f = float(batch_std(fake.detach(), labels)[0].flatten()[0])
        if r <= 0:
            return 0.0
        self.last_diversity = f / r
        return self.check("mode_collapse", f < ratio * r,
                          f"generated images vary {f / r:.2f}x as much as real ones{' of the same class' if labels is not None else ''} "
                          f"for {self.patience} steps: mode collapse (S004); try loss: wgan-gp or model.minibatch_std=true",
                          patience=checks)
