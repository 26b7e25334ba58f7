"""Every family at a small fixed config: medgen's ``training_step`` against a bare MONAI-tutorial-style
loop on the same networks (target: <= 5% slower per step), sampling images/s (diffusion: DDIM-50
against DDPM-1000, target >= 15x) and peak training memory against the bare loop. A training
ratio is the median over the repeats of medgen's time over the bare loop's in the same repeat,
where the two sides run interleaved step by step (``common.interleaved_times``: for every batch,
one step of each, timed apart), so the machine's drift over seconds meets both alike.

The bare loops do the same losses and forward passes as the family (so the ratio is medgen's
overhead, not a different algorithm) with plain torch/MONAI calls: no StepContext, no seeded
generator, no non-finite guard, no GAN monitors. Configs: each preset's ``small`` networks at
32x32, batch 16 (``BENCH_QUICK=1``: short timed calls, one repeat, DDPM-100: a sanity run only).
"""
from __future__ import annotations

import gc
import math
import statistics

import torch
import torch.nn.functional as F

from common import (StageData, TutorialStep, figure, gpu_options, interleaved_times, median_ratio, paired_median,
                    peak_memory_mb, pick)

SIZE, BATCH = (32, 32), 16
STEPS = pick(3, 1)  # batches (optimiser steps) per pass; a timed call makes passes of at least MIN_CALL_S
MIN_CALL_S = pick(0.6, 0.2)
REPEATS = pick(5, 1)
# the training ratios' target (5 %) is narrow against this machine's drift: the two sides are timed
# interleaved step by step (``interleaved_times``), and the median is over several repeats
TRAIN_REPEATS = pick(5, 1)
DDPM_STEPS = pick(1000, 100)
N_SAMPLE = pick(4, 2)  # images per diffusion sampling call (DDPM-1000 is the slow part of this script)
LABELS = ["a", "b", "c", "d"]

FAMILIES = {  # name: (preset, profile, overrides)
    "ddpm 2D": ("brain-ddpm-anomaly", "small", []),
    "ldm diffusion stage": ("mammo-roi-ldm", "small", []),
    "gan (cGAN)": ("brain-tumor-cgan", "small", []),
    "vae": ("brain-tumor-vae-pretrain", "small", []),
    "vae-gan": ("vae-gan", "small", []),
    "conv-ae": ("brain-ae-anomaly", "small", []),
}


def _scheduler(p):
    from monai.networks.schedulers import DDPMScheduler

    kw = {} if p.schedule == "cosine" else {"beta_start": p.beta_start, "beta_end": p.beta_end}
    return DDPMScheduler(num_train_timesteps=p.num_train_timesteps, schedule=p.schedule, **kw)


def bare_loop(family: str, m, cfg, batches, device, amp_dtype):
    """A plain training step for family ``family`` on model ``m``'s networks; returns step(batch)."""
    b = TutorialStep(device, amp_dtype)
    lr = cfg.stage(m.stages[-1]).lr
    if family in ("ddpm 2D", "ldm diffusion stage"):
        unet, sched = m.denoiser.unet, _scheduler(m.params.scheduler)
        sched.alphas_cumprod = sched.alphas_cumprod.to(device)
        opt = torch.optim.Adam(unet.parameters(), lr=lr)
        if family == "ldm diffusion stage":
            # the same work as medgen's stage: latents of the training images encoded once, a fresh
            # draw from q(z|x) every step (encode-every-step is bench_latent_cache's reference)
            ae = m.autoencoder.eval().requires_grad_(False)
            with torch.no_grad():
                cache = [ae.encode(bt["image"]) for bt in batches]
            scale = 1.0 / torch.cat([mu + s * torch.randn_like(s) for mu, s in cache]).std()
            lookup = {id(bt): c for bt, c in zip(batches, cache)}

        def step(batch):
            if family == "ddpm 2D":
                x0 = batch["image"] * 2 - 1
            else:
                mu, s = lookup[id(batch)]
                x0 = (mu + s * torch.randn_like(s)) * scale
            noise = torch.randn_like(x0)
            t = torch.randint(0, sched.num_train_timesteps, (x0.shape[0],), device=device)
            with b.autocast():
                pred = unet(x=sched.add_noise(x0, noise, t), timesteps=t)
            return b.step(F.mse_loss(pred.float(), noise), opt)
        return step

    p = m.params
    if family == "gan (cGAN)":
        G, D = m.generator, m.discriminator
        opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))

        def step(batch):  # non-saturating BCE GAN, one D step then one G step (GAN autocasts nothing)
            x, y = batch["image"], batch["label"]
            with torch.no_grad():
                fake = G(torch.randn(len(x), p.latent_dim, device=device), y)
            d_real, d_fake = D(x, y), D(fake, y)
            b.step(F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                   + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)), opt_d)
            D.requires_grad_(False)
            logits = D(G(torch.randn(len(x), p.latent_dim, device=device), y), y)
            loss = b.step(F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)), opt_g)
            D.requires_grad_(True)
            return loss
        return step

    if family == "vae":
        opt = torch.optim.Adam(m.parameters(), lr=lr)

        def step(batch):  # Keras-VAE loss: BCE summed over pixels + KL, averaged over the batch
            x = batch["image"]
            with b.autocast():
                mu, logvar = m.encoder(x, None)
                logits = m.decoder(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu), None)
            mu, logvar = mu.float(), logvar.float()
            recon = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none").flatten(1).sum(1).mean()
            kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
            return b.step(recon + p.kl_weight * kl, opt)
        return step

    if family == "vae-gan":
        E, Dec, D = m.encoder, m.decoder, m.discriminator
        opts = [torch.optim.Adam(n.parameters(), lr=lr, betas=tuple(p.betas)) for n in (E, Dec, D)]
        layer, x_pixels = p.feature_layer, m.n_pixels

        def disc(images):
            feats, logits = D.features(torch.cat(images))
            return feats[layer], logits

        def step(batch):  # Larsen et al.'s three updates (encoder, decoder, discriminator), no AMP
            x = batch["image"]
            n = len(x)
            D.requires_grad_(False)
            mu, logvar = E(x, None)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            x_rec = torch.sigmoid(Dec(z, None))
            f, _ = disc([x, x_rec])
            kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean() / x_pixels
            b.step(p.kl_weight * kl + p.feature_weight * ((f[n:] - f[:n].detach()) ** 2).mean()
                   + p.pixel_weight * (x_rec - x).abs().mean(), opts[0])
            x_rec = torch.sigmoid(Dec(z.detach(), None))
            x_p = torch.sigmoid(Dec(torch.randn_like(mu), None))
            f, logits = disc([x, x_rec, x_p])
            g_adv = F.binary_cross_entropy_with_logits(logits[n:], torch.ones_like(logits[n:]))
            b.step(p.gamma * ((f[n:2 * n] - f[:n].detach()) ** 2).mean() + p.adv_weight * g_adv
                   + p.pixel_weight * (x_rec - x).abs().mean(), opts[1])
            D.requires_grad_(True)
            _, logits = disc([x, x_rec.detach(), x_p.detach()])
            return b.step(F.binary_cross_entropy_with_logits(logits[:n], torch.ones_like(logits[:n]))
                          + F.binary_cross_entropy_with_logits(logits[n:], torch.zeros_like(logits[n:])), opts[2])
        return step

    if family == "conv-ae":
        opt = torch.optim.Adam([q for q in m.parameters() if q.requires_grad], lr=lr)

        def step(batch):  # denoising AE: coarse noise, L1 reconstruction of the clean image
            x = batch["image"]
            noise = torch.randn(len(x), 1, p.noise_resolution, p.noise_resolution, device=device)
            x_in = x + p.input_noise * F.interpolate(noise, size=x.shape[2:], mode="bilinear", align_corners=False)
            with b.autocast():
                z = m.encoder(x_in)
                recon = m.decoder(m.bottleneck(z) if m.bottleneck is not None else z)
            return b.step(F.l1_loss(recon.float(), x), opt)
        return step
    raise KeyError(family)


def bench_family(family: str, preset: str, profile: str, overrides: list[str], device) -> None:
    from medgen.config import resolve
    from medgen.engine.context import StepContext
    from medgen.models.base import DataInfo, build_model

    cfg = resolve(preset, profile, ["model.spatial_dims=2", *overrides])
    info = DataInfo(2, 1, SIZE, LABELS)
    gen = torch.Generator().manual_seed(0)
    batches = [{"image": torch.rand(BATCH, 1, *SIZE, generator=gen).to(device),
                "label": torch.randint(0, len(LABELS), (BATCH,), generator=gen).to(device),
                "index": torch.arange(i * BATCH, (i + 1) * BATCH)} for i in range(STEPS)]

    def build():
        torch.manual_seed(0)  # both sides start from the same weights
        return build_model(cfg, info).to(device).train()

    med, ref = build(), build()
    stage = med.stages[-1]
    scfg = cfg.stage(stage)
    ctx = StepContext(device, scfg.amp, scfg.grad_clip, torch.Generator().manual_seed(0))
    ctx.stage = stage
    med.on_stage_start(stage, StageData(batches))
    ctx.optimizers = med.optimizers(stage, scfg)
    bare = bare_loop(family, ref, cfg, batches, device, ctx.amp_dtype)
    amp = str(ctx.amp_dtype).replace("torch.", "") if ctx.amp_dtype is not None else None
    if family in ("gan (cGAN)", "vae-gan"):
        amp = None  # these families' steps do not autocast
    run = {"medgen": lambda: [med.training_step(bt, stage, ctx) for bt in batches],
           "bare": lambda: [bare(bt) for bt in batches]}
    # peak memory first, while the optimiser states are still to be allocated (part of training memory)
    mem = {k: peak_memory_mb(fn) for k, fn in run.items()}
    # light families take milliseconds per step: time enough passes over the batches per call that
    # timer and scheduler noise stay small against it
    once = paired_median(run, repeats=1, warmup=0)
    passes = min(20, max(1, math.ceil(MIN_CALL_S / max(once.values()))))
    times = interleaved_times({"medgen": lambda bt: med.training_step(bt, stage, ctx), "bare": bare}, batches, passes,
                              TRAIN_REPEATS)
    ratio, spread = median_ratio(times["medgen"], times["bare"])  # per repeat: the two sides interleaved step by step
    steps = passes * len(batches)
    net_text = f"{preset} {profile} networks, {SIZE[0]}x{SIZE[1]}"
    cfg_text = f"{net_text}, batch {BATCH}"
    per = {k: statistics.median(v) / steps for k, v in times.items()}
    figure("families", f"{family} training ({cfg_text})", "s/step", per["medgen"], per["bare"],
           "bare tutorial-style loop, same networks and losses", ratio, "<= 1.05", ratio_range=spread,
           steps_per_s={k: 1 / v for k, v in per.items()}, images_per_s={k: BATCH / v for k, v in per.items()},
           steps_per_call=steps, repeats=TRAIN_REPEATS, gpu_options=gpu_options(amp))
    figure("families", f"{family} training peak memory ({cfg_text})", "MB", mem["medgen"][0], mem["bare"][0],
           "bare tutorial-style loop", (mem["medgen"][0] / mem["bare"][0]) if mem["bare"][0] else None, None,
           method=mem["medgen"][1], note=f"{STEPS} steps from fresh optimisers (gradients, Adam states, activations; "
           "weights excluded)", gpu_options=gpu_options(amp))
    bench_sampling(family, med, net_text)


def bench_sampling(family: str, m, cfg_text: str) -> None:
    m.eval()

    def gen():
        return torch.Generator().manual_seed(0)

    if family == "conv-ae":  # an anomaly-detection autoencoder: it reconstructs, it does not sample
        x = torch.rand(64, 1, *SIZE, device=m.device)
        t = paired_median({"r": lambda: m.reconstruct(x)}, repeats=REPEATS)["r"]
        figure("families", f"{family} reconstruction ({cfg_text}; conv-ae cannot sample)", "images/s", 64 / t, None,
               "none: one forward pass, nothing to compare against", None, None, gpu_options=gpu_options())
        return
    if family in ("ddpm 2D", "ldm diffusion stage"):
        with torch.no_grad():
            ddim = paired_median({"s": lambda: m.sample(N_SAMPLE, steps=50, sampler="ddim", generator=gen())},
                                 repeats=pick(3, 1))["s"]
            # one DDPM run: its many steps already average out, and it is the slowest call here
            ddpm = paired_median({"s": lambda: m.sample(N_SAMPLE, steps=DDPM_STEPS, sampler="ddpm", generator=gen())},
                                 repeats=1, warmup=0)["s"]
        figure("families", f"{family} sampling DDIM-50 vs DDPM-{DDPM_STEPS} ({cfg_text}, {N_SAMPLE} images)", "images/s",
               N_SAMPLE / ddim, N_SAMPLE / ddpm, f"DDPM-{DDPM_STEPS}, same model", ddpm / ddim,
               ">= 15" if DDPM_STEPS == 1000 else None, gpu_options=gpu_options())
        return
    n = 64
    t = paired_median({"s": lambda: m.sample(n, generator=gen())}, repeats=REPEATS)["s"]
    figure("families", f"{family} sampling ({cfg_text})", "images/s", n / t, None,
           "none: one generator pass per batch, no iterative sampler to compare against", None, None,
           images=n, gpu_options=gpu_options())


def bench_amp(device) -> None:
    """AMP (autocast) against fp32 on the ddpm step: on CUDA ``train.amp`` (on by default; bf16 where
    supported, else fp16), on a CPU with native bf16 ``train.cpu_amp`` (opt-in bf16). The other
    opt-in options (channels_last, torch.compile, efficient attention) are bench_speed_options.py's."""
    from medgen.engine.context import cpu_has_native_bf16

    if device.type != "cuda" and not cpu_has_native_bf16():
        figure("families", "AMP (autocast) vs fp32", "", None, None,
               "not applicable: this CPU has no native bf16 (train.cpu_amp is refused here) and no GPU "
               "(channels_last, torch.compile and efficient attention: the speed-option rows)", None, None,
               gpu_options=gpu_options())
        return
    from medgen.config import resolve
    from medgen.engine.context import StepContext
    from medgen.models.base import DataInfo, build_model

    preset, profile, overrides = FAMILIES["ddpm 2D"]
    cfg = resolve(preset, profile, ["model.spatial_dims=2", *overrides])
    batches = [{"image": torch.rand(BATCH, 1, *SIZE, device=device), "label": torch.zeros(BATCH, dtype=torch.long, device=device),
                "index": torch.arange(BATCH)} for _ in range(STEPS)]
    runs, dtype = {}, None
    for name, amp in (("amp", True), ("fp32", False)):
        torch.manual_seed(0)
        m = build_model(cfg, DataInfo(2, 1, SIZE, LABELS)).to(device).train()
        ctx = StepContext(device, amp, None, torch.Generator().manual_seed(0), cpu_amp=amp)
        ctx.optimizers = m.optimizers("diffusion", cfg.stage("diffusion"))
        dtype = dtype or ctx.amp_dtype
        runs[name] = (lambda bt, m=m, ctx=ctx: m.training_step(bt, "diffusion", ctx))
    times = interleaved_times(runs, batches, 1, REPEATS, warmup=1)
    speedup, spread = median_ratio(times["fp32"], times["amp"])
    t = {k: statistics.median(v) for k, v in times.items()}
    what = "train.amp" if device.type == "cuda" else "train.cpu_amp, CPU"
    dname = str(dtype).replace("torch.", "")
    figure("families", f"ddpm 2D training with AMP ({dname}, {what}) vs fp32 ({preset} {profile}, "
           f"{SIZE[0]}x{SIZE[1]}, batch {BATCH})", "s/step", t["amp"] / STEPS, t["fp32"] / STEPS, "same step in fp32",
           speedup, None, ratio_range=spread, repeats=REPEATS,
           gpu_options=gpu_options(f"{dname} ({what})"))


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for family, (preset, profile, overrides) in FAMILIES.items():
        bench_family(family, preset, profile, overrides, device)
        gc.collect()  # the family's networks and optimisers, before the next family's peak memory
    bench_amp(device)


if __name__ == "__main__":
    main()
