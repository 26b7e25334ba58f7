"""The autoencoder's floor margin: a background at the data range's floor (0) is pushed below it by a
margin, so decoding noise no longer lifts it into a faint grey haze once sampling clips to [0, 1]."""
import torch
import torch.nn.functional as F

from medgen.models.ldm import floor_margin_l1


def test_floor_margin_costs_only_the_excess_above_minus_margin_at_the_floor():
    x = torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5])
    recon = torch.tensor([-0.1, -0.02, 0.03, 0.4, 0.6])
    assert torch.isclose(floor_margin_l1(recon, x, 0.0), F.l1_loss(recon, x))
    # floor pixels: below -0.05 free, -0.02 costs 0.03, 0.03 costs 0.08; tissue: |error| both ways
    want = (0.0 + 0.03 + 0.08 + 0.1 + 0.1) / 5
    assert torch.isclose(floor_margin_l1(recon, x, 0.05), torch.tensor(want))


def test_a_background_trained_with_the_margin_decodes_to_exact_zeros_under_noise():
    """The mechanism on a toy decoder output: per-pixel levels, decoded with noise of std 0.01 as a
    generated latent would be. Plain L1 leaves them straddling 0 (half the pixels grey after the clip);
    with a margin of 0.05 (5 noise standard deviations) they sit below it and clip to exactly 0."""
    def train(margin: float) -> float:
        g = torch.Generator().manual_seed(0)
        level = torch.rand(2000, generator=g).mul(0.02).requires_grad_()
        opt = torch.optim.Adam([level], lr=0.005)
        for _ in range(300):
            opt.zero_grad()
            floor_margin_l1(level + 0.01 * torch.randn(2000, generator=g), torch.zeros(2000), margin).backward()
            opt.step()
        decoded = (level.detach() + 0.01 * torch.randn(2000, generator=g)).clamp(0, 1)
        return float((decoded > 0).float().mean())

    plain, margin = train(0.0), train(0.05)
    assert plain > 0.3 and margin < 0.01, (plain, margin)
