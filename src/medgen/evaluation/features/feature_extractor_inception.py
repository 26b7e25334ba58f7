"""``inception:FILE``: the standard FID Inception-v3 (2048-d pool features).

``FILE`` is one of
  * ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid; torch-fidelity ships the same weights as
    ``weights-inception-2015-12-05-6726825d.pth``): the TF-FID network, rebuilt here on
    torchvision's Inception3 with the FID-specific pooling blocks. Published FIDs use this network;
  * a TorchScript file: NVIDIA's ``inception-2015-12-05.pt`` (clean-fid, StyleGAN2-ADA; its
    ``forward`` takes ``return_features``; input 0..255), or any TorchScript module taking
    (N, 3, 299, 299) in [-1, 1] and returning (N, 2048) (or (N, 2048, h, w), pooled here);
  * torchvision's ``inception_v3_google-0cc3c7bd.pth`` state dict: ImageNet Inception-v3, *not* the
    FID network, so its numbers are not comparable with published FIDs.
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
    nvidia_style,
    resolve_weights,
    strip_prefixes,
    torchvision_or_error,
)

USAGE = "inception:FILE"
#: where users get the weights (also in docs/evaluation.md); file names searched in the torch hub cache
WEIGHTS = {
    "files": ["pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth",
              "inception-2015-12-05.pt", "inception_v3_google-0cc3c7bd.pth"],
    "where": ("the FID Inception weights of pytorch-fid "
              "(https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth; "
              "torch-fidelity's weights-inception-2015-12-05-6726825d.pth is the same file) or NVIDIA's TorchScript "
              "inception-2015-12-05.pt used by clean-fid "
              "(https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt)"),
}


def build(arg: str | None, *, device: Any = None, **_: Any) -> TorchImageExtractor:
    return _inception(resolve_weights("inception", arg, WEIGHTS), device)


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
        net = load_torchscript(path)
        if nvidia_style(net):
            return TorchImageExtractor("inception", net, path, 299, "0to255",
                                       "grey->3 channels, bilinear resize to 299x299, values 0..255 (NVIDIA TorchScript, return_features=True)",
                                       "nvidia", device)
        return TorchImageExtractor("inception", net, path, 299, "minus1to1",
                                   "grey->3 channels, bilinear resize to 299x299, scaled to [-1, 1] (TorchScript)",
                                   "torchscript", device)
    import torch

    sd = strip_prefixes(load_state_dict(path))
    tv = torchvision_or_error("inception")
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
    check_loaded("inception", path, res)
    net.fc = torch.nn.Identity()
    net.eval()
    return TorchImageExtractor("inception", net, path, 299, prep, text, variant, device)
