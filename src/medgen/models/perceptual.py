"""Perceptual losses from LOCAL weights only (nothing is downloaded; missing files are errors).

``resnet50`` / ``radimagenet_resnet50``: MONAI's ``PerceptualLoss`` with a ResNet-50 feature
network built without weights, then filled from the user's file (ImageNet torchvision weights,
or RadImageNet's ResNet-50 as S000 suggests). ``alex`` (LPIPS, S000's choice) needs the
``lpips`` package and its AlexNet + linear-layer weights in the torch hub cache.
"""
from __future__ import annotations

from pathlib import Path

import torch

from medgen.errors import UserError


def build_perceptual(network: str, path: Path, spatial_dims: int) -> torch.nn.Module:
    from medgen.compat import import_torchvision
    from medgen.weights import load_weights_file

    if import_torchvision() is None:
        raise UserError("the perceptual loss needs torchvision (pip install torchvision)")
    from monai.losses import PerceptualLoss

    if network == "alex":
        import os

        os.environ.setdefault("TORCH_HOME", str(Path(path).parent))
        try:
            return PerceptualLoss(spatial_dims=spatial_dims, network_type="alex", is_fake_3d=spatial_dims == 3)
        except Exception as err:  # lpips missing, or its weights not in the hub cache
            raise UserError(f"LPIPS/AlexNet perceptual loss unavailable offline ({err.__class__.__name__}: {err}); "
                            "use perceptual_network: resnet50 with a local weights file", path) from None
    loss = PerceptualLoss(spatial_dims=spatial_dims, network_type="resnet50", pretrained=False, is_fake_3d=spatial_dims == 3)
    state = load_weights_file(Path(path), allow_pickle=True)
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    target = loss.perceptual_function.model
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < 0.9 * len(own):
        raise UserError(f"weights file fits only {len(usable)} of {len(own)} ResNet-50 tensors", path)
    target.load_state_dict(usable, strict=False)
    return loss.eval().requires_grad_(False)
