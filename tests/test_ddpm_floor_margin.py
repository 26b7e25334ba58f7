"""The pixel DDPM's floor margin (``model.floor_margin``): the background (pixels exactly 0) is moved
below every tissue value in diffusion space, and the samplers' range reaches down to it, so a
generated background with a small error still comes out as exact zeros instead of a grain of grey."""
import pytest
import torch

from medgen.models.base import DataInfo
from medgen.models.ddpm import DDPMParams, PixelDiffusion

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UNET = dict(channels=[8, 8], attention_levels=[False, False], norm_num_groups=4, num_head_channels=8)


def _model(margin: float) -> PixelDiffusion:
    params = DDPMParams.model_validate(dict(unet=UNET, scheduler=dict(num_train_timesteps=50), floor_margin=margin))
    return PixelDiffusion(params, DataInfo(2, 1, (8, 8), ["a"])).eval()


def test_the_map_moves_only_the_floor_and_round_trips():
    x = torch.tensor([0.0, 1 / 255, 0.5, 1.0]).view(1, 1, 2, 2)
    plain, margin = _model(0.0), _model(0.1)
    assert torch.allclose(plain.to_diffusion_space(x), x * 2 - 1)
    assert plain.clip == (-1.0, 1.0)
    z = margin.to_diffusion_space(x).flatten()
    assert margin.clip == pytest.approx((-1.2, 1.0))
    assert z[0] == pytest.approx(-1.2) and torch.allclose(z[1:], x.flatten()[1:] * 2 - 1)
    assert torch.allclose(margin.from_diffusion_space(margin.to_diffusion_space(x)), x, atol=1e-7)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_a_background_predicted_with_a_small_error_samples_to_exact_zeros_only_with_the_margin(sampler):
    """A network that predicts the background with an error of std 0.05 (in [-1, 1] units) at every
    step, through the real samplers: without a margin its mean sits on the clip's edge and half the
    pixels come out grey; with a margin of 0.1 (0.2 in those units, 4 standard deviations) none do."""
    def grey_share(margin: float) -> float:
        model = _model(margin)
        den = model.denoiser
        g = torch.Generator().manual_seed(0)
        floor = model.clip[0]

        def net(x, t, labels):  # the noise that implies x0 = floor + error (Ho et al. eq. 4 solved for eps)
            abar = den.alphas_cumprod[t].view(-1, 1, 1, 1)
            x0 = floor + 0.05 * torch.randn(x.shape, generator=g)
            return (x - abar.sqrt() * x0) / (1 - abar).sqrt()

        den.net = net
        out = model.sample(64, steps=10, generator=torch.Generator().manual_seed(1), sampler=sampler)
        assert out.min() >= 0 and out.max() <= 1
        return float((out > 0).float().mean())

    plain, margin = grey_share(0.0), grey_share(0.1)
    assert plain > 0.3 and margin < 0.001, (plain, margin)


def test_training_sees_the_floor_below_the_tissue():
    model = _model(0.1).train()
    seen = {}

    def loss(x0, labels, ctx):
        seen["x0"] = x0
        return (x0 * 0).sum() + sum(p.sum() * 0 for p in model.parameters())

    model.denoiser.training_loss = loss

    class Ctx:
        def backward(self, value):
            value.backward()

    image = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 2, 2)
    model.training_step({"image": image, "label": torch.zeros(1, dtype=torch.long)}, "diffusion", Ctx())
    assert seen["x0"].flatten().tolist() == pytest.approx([-1.2, -0.5, 0.0, 1.0])
