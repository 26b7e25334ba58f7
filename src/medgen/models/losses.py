"""Losses of the GAN, VAE and VAE-GAN: WGAN-GP's gradient penalty (Gulrajani et al. 2017), the
VAE's KL term and its reconstruction term in the ELBO's units."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
