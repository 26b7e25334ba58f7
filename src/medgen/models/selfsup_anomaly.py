"""``selfsup-anomaly``: a segmentation network trained on NORMAL images into which synthetic
anomalies are drawn (:mod:`medgen.anomaly.corruptions`), so it learns to mark what does not belong
in a normal image; its sigmoid output is the anomaly map (``medgen detect``'s ``segmenter`` detector).
It does not generate images.

Why a third route beside reconstruction and patch features: reconstruction detectors keep small
lesions (a denoising network reproduces a 3-9 px spot it was never taught to remove), and
features trained on normals alone do not know which deviations matter. Self-supervised anomaly
segmentation (Foreign Patch Interpolation, Tan et al. 2020/2022; NSA, Schlueter et al. 2022;
DRAEM, Zavrtanik et al. 2021) is told directly: "this region was changed", for many kinds, sizes
and contrasts of change, in the user's own normal images. No real lesion is used.

Network: MONAI's ``UNet`` (2D or 3D) with ``channels`` / ``strides`` and residual units, one
output channel. Loss: binary cross-entropy plus soft Dice on the drawn masks (per image by default). Training batches:
normal images with random flips (``flip``) and a mild random gamma (``gamma``), so the network
does not call a global contrast change an anomaly, then the synthetic anomalies (each image gets
one with probability ``anomaly_p``). Validation: the same loss on the validation normals with
anomalies drawn from a fixed seed (the same every epoch).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from medgen.errors import UserError
from medgen.models.base import FamilyParams, GenerativeModel


PRIOR_LOGIT = float(np.log(0.01 / 0.99))


def _soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, batch: bool) -> torch.Tensor:
    """MONAI's soft Dice loss of the sigmoid probabilities, per image (or over the batch), +1 smoothing."""
    from monai.losses import DiceLoss

    return DiceLoss(sigmoid=True, batch=batch, smooth_nr=1.0, smooth_dr=1.0, reduction="none")(logits, target)


class SelfSupParams(FamilyParams):
    channels: list[int] = [16, 32, 64, 128]
    strides: list[int] = [2, 2, 2]
    num_res_units: int = Field(1, ge=0)
    anomaly_p: float = Field(0.6, gt=0, le=1)           # share of training images given an anomaly
    diameter: tuple[float, float] = (0.04, 0.30)        # anomaly size, fraction of the image side (log-uniform)
    contrast: tuple[float, float] = (0.06, 0.50)        # intensity anomalies: |value - local mean|
    kinds: list[str] = ["intensity", "foreign", "scale", "texture"]
    foreground: float = Field(0.05, ge=0, lt=1)         # anomalies are centred where the image is above this
    flip: bool = True
    gamma: float = Field(0.2, ge=0, lt=1)               # random gamma in [1 - g, 1 / (1 - g)]
    dice_weight: float = Field(1.0, ge=0)
    # soft Dice per image (every anomaly counts alike, however small; an image without one is
    # penalised for its false-positive mass) or over the whole batch (large anomalies dominate)
    dice: Literal["image", "batch"] = "image"
    # the anomaly map is the mean over the image and its mirror images (test-time augmentation):
    # a lesion is marked in every view, a spurious response to one view's texture is averaged down
    test_flips: bool = True


class SelfSupAnomaly(GenerativeModel):
    Params = SelfSupParams
    stages = ("segmenter",)
    can_sample = False
    can_score = True
    detectors = ("segmenter", "model")

    def __init__(self, params: SelfSupParams, info):
        super().__init__(params, info)
        from monai.networks.nets import UNet

        from medgen.anomaly.corruptions import KINDS

        p = params
        if len(p.channels) != len(p.strides) + 1 or min(p.channels) < 1:
            raise UserError(f"model.channels needs one more entry than model.strides (got {p.channels} and {p.strides})")
        bad = [k for k in p.kinds if k not in KINDS]
        if bad or not p.kinds:
            raise UserError(f"model.kinds: unknown {', '.join(bad) or '(empty list)'}; choose from {', '.join(KINDS)}")
        if not (0 < p.diameter[0] <= p.diameter[1] <= 1) or not (0 <= p.contrast[0] <= p.contrast[1] <= 1):
            raise UserError(f"model.diameter and model.contrast are (low, high) in (0, 1], got {p.diameter} and {p.contrast}")
        down = int(np.prod(p.strides))
        if any(s % down for s in info.size):
            raise UserError(f"image size {tuple(info.size)} is not divisible by {down} (the product of model.strides); "
                            "prepare the data at a multiple of it or use fewer levels")
        self.net = UNet(spatial_dims=info.spatial_dims, in_channels=info.channels, out_channels=1,
                        channels=tuple(p.channels), strides=tuple(p.strides), num_res_units=p.num_res_units,
                        norm="instance")

    def notes(self) -> list[str]:
        p = self.params
        return [f"anomaly segmenter: MONAI UNet {p.channels}, trained on normals with synthetic anomalies "
                f"({', '.join(p.kinds)}; {p.diameter[0]:g}-{p.diameter[1]:g} of the side across)"]

    def describe(self) -> dict:
        p = self.params
        return {"training_anomalies": {"kinds": list(p.kinds), "diameter": list(p.diameter),
                                       "contrast": list(p.contrast), "share": p.anomaly_p}}

    def forward(self, x):
        # anomalies cover about 1 % of the pixels: starting the logits at that prior (RetinaNet's
        # initialisation, Lin et al. 2017) spares the first hundreds of steps of learning "mostly normal"
        return self.net(x) + PRIOR_LOGIT

    def _augment(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        p = self.params
        dims = tuple(range(2, x.dim()))
        if p.flip:
            for d in dims:
                flip = torch.from_numpy(rng.random(len(x)) < 0.5).to(x.device)
                x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(d), x)
        if p.gamma > 0:
            g = np.exp(rng.uniform(np.log(1 - p.gamma), -np.log(1 - p.gamma), len(x))).astype(np.float32)
            x = x.clamp(0, 1) ** torch.from_numpy(g).to(x.device).view(-1, *[1] * (x.dim() - 1))
        return x

    def _corrupt(self, x: torch.Tensor, rng: np.random.Generator):
        from medgen.anomaly.corruptions import corrupt

        p = self.params
        images, masks = corrupt(x.detach().float().cpu().numpy(), rng, p=p.anomaly_p, diameter=tuple(p.diameter),
                                contrast=tuple(p.contrast), kinds=tuple(p.kinds), foreground=p.foreground)
        return torch.from_numpy(images).to(x.device), torch.from_numpy(masks).to(x.device)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        bce = F.binary_cross_entropy_with_logits(logits, target)
        if self.params.dice_weight <= 0:
            return bce
        dice = _soft_dice_loss(logits, target, batch=self.params.dice == "batch").flatten()
        if self.params.dice == "image":
            # the images with an anomaly; false positives elsewhere are the cross-entropy's to punish
            # (a Dice on an empty image rewards predicting nothing anywhere, which small anomalies then get)
            has = target.flatten(1).amax(1) > 0
            dice = dice[has] if has.any() else dice.new_zeros(1)
        return bce + self.params.dice_weight * dice.mean()

    def training_step(self, batch, stage, ctx):
        # a numpy generator seeded from the trainer's torch generator: a resumed run draws the same anomalies
        rng = np.random.default_rng(int(ctx.randint(2**31 - 1, (1,)).item()))
        x, target = self._corrupt(self._augment(batch["image"], rng), rng)
        with ctx.autocast():
            logits = self(x)
        loss = self._loss(logits, target)
        ctx.backward(loss)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def validation_step(self, batch, stage):
        x0 = batch["image"]
        # the same anomalies every epoch: a seed from the batch's own pixels
        seed = int(np.abs(x0.detach().float().cpu().numpy()).sum() * 1000) % (2**31 - 1)
        x, target = self._corrupt(x0, np.random.default_rng(seed))
        logits = self(x).float()
        return {"loss": float(self._loss(logits, target)),
                "dice": float(1 - _soft_dice_loss(logits, target, batch=True).mean())}

    @torch.no_grad()
    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        if not self.params.test_flips:
            return torch.sigmoid(self(x).float())
        import itertools

        dims = list(range(2, x.dim()))
        views = [list(c) for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]
        total = torch.zeros((x.shape[0], 1, *x.shape[2:]), device=x.device)
        for flip in views:  # 4 views in 2D, 8 in 3D
            xi = x.flip(flip) if flip else x
            p = torch.sigmoid(self(xi).float())
            total += p.flip(flip) if flip else p
        return total / len(views)

    @torch.no_grad()
    def sample(self, n, labels=None, steps=None, generator=None, **kwargs):
        raise UserError("selfsup-anomaly is an anomaly segmenter: it does not generate images (use `medgen detect RUN`)")
