"""reconstruction: how well an autoencoding model reconstructs the real images (MAE, MSE, PSNR, SSIM, MS-SSIM),
and the Fréchet distance between the reconstructions and the real images in every chosen extractor's
features (the FRD on radiomics). A latent diffusion model's diffusion stage learns the distribution of
the encoded images, so in practice its samples come no closer to the real images than these
reconstructions: the distance is the floor of the distribution group's, and a sample distance far
above it points at the diffusion stage, one near it at the autoencoder. It is a heuristic floor, not a
bound, and not one for a VAE or VAE-GAN sampled from its prior: their samples can land closer than the
reconstructions of the encoder's means (docs/sample-quality.md)."""
from __future__ import annotations

import numpy as np

from medgen.evaluation.groups.base import Context, MetricGroup, fmt, fmt_ci, interval_headline


def _metrics(section: dict):
    return [(k, d) for k, d in section.items() if isinstance(d, dict) and "mean" in d]


def _feature_distances(ctx: Context, recon: np.ndarray) -> dict:
    """Per extractor: the Fréchet distance of the reconstructions to the real images they reconstruct
    (z-scored with the real images' statistics where the extractor asks for it, as the distribution
    group does), with its bootstrap interval."""
    from medgen.evaluation.groups._feature_pairs import against_real
    from medgen.metrics import fid_from_features

    if len(recon) < 2:
        return {name: {"skipped": "a Fréchet distance needs at least 2 images"} for name in ctx.features.names()}
    out = {}
    for name in ctx.features.names():
        ctx.echo(f"features: {name} of {len(recon)} reconstructed images")
        f_real, f_rec, _ = against_real(ctx, name, ctx.features.get(name)(recon))
        d = {"fd": float(fid_from_features(f_real, f_rec))}
        if ctx.run.n_resamples:
            from medgen.metrics.feature_intervals import fid_ci

            d["interval"] = fid_ci(f_real, f_rec, n_resamples=ctx.run.n_resamples)
        out[name] = d
    return out


def _fd_label(name: str) -> str:
    return "FRD" if name == "radiomics" else "FD"  # the Fréchet distance of radiomics features is the FRD


class Reconstruction(MetricGroup):
    name = "reconstruction"
    needs = frozenset({"model"})
    scope = "run"
    title = "autoencoder reconstruction of the real images"
    meanings = {
        "reconstruction/fd/": "Fréchet distance of the model's reconstructions to the real images (latent diffusion: "
                              "the samples' distance comes no lower in practice)",
        "reconstruction/frd/": "FRD of the model's reconstructions to the real images (latent diffusion: the samples' "
                               "FRD comes no lower in practice)",
    }

    def compute(self, ctx: Context) -> dict:
        import torch

        from medgen.metrics import paired_metrics

        model, real = ctx.model, ctx.real
        if model is None:
            return {"skipped": "needs a RUN of an autoencoding model"}
        if not model.can_reconstruct:
            return {"skipped": f"model family '{ctx.run.family}' does not reconstruct images"}
        ctx.echo(f"reconstruction of {len(real)} real images")
        batch_size = ctx.run.batch_size
        recon = []
        with torch.no_grad():
            for start in range(0, len(real), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(real.images[start:start + batch_size])).to(model.device)
                recon.append(model.reconstruct(x).float().clamp(0, 1).cpu().numpy())
        recon = np.concatenate(recon)
        scores = paired_metrics(real.images, recon)
        out = {name: {"mean": s.mean, "std": float(np.std(s.per_image)), "settings": s.settings} for name, s in scores.items()}
        if ctx.run.n_resamples and len(real) >= 2:
            from medgen.metrics.intervals import bootstrap_ci

            for name, s in scores.items():  # the mean over images, resampling the images
                out[name]["interval"] = bootstrap_ci(lambda v: v.mean(axis=1), np.asarray(s.per_image, dtype=np.float64),
                                                     n_resamples=ctx.run.n_resamples, vectorized=True)
        out["settings"] = {"n_images": len(real), "split": real.source.get("split")}
        out["feature_distance"] = _feature_distances(ctx, recon)
        return out

    def headline(self, section: dict) -> dict[str, dict]:
        out = {f"reconstruction/{k}": interval_headline(d["mean"], d.get("interval")) for k, d in _metrics(section)}
        for name, d in (section.get("feature_distance") or {}).items():
            if "fd" in d:
                out[f"reconstruction/{_fd_label(name).lower()}/{name}"] = interval_headline(d["fd"], d.get("interval"))
        return out

    def table_rows(self, section: dict) -> list[tuple[str, str, str]]:
        rows = [("", "skipped", section["skipped"])] if "skipped" in section else []
        rows += [(k.upper() if k != "ms_ssim" else "MS-SSIM", fmt_ci(d["mean"], d.get("interval")), f"± {fmt(d['std'])} (sd over images)") for k, d in _metrics(section)]
        for name, d in (section.get("feature_distance") or {}).items():
            rows.append((f"{_fd_label(name)} [{name}]", d["skipped"] if "skipped" in d else fmt_ci(d["fd"], d.get("interval")),
                         "of the reconstructions (latent diffusion: the samples' floor)"))
        return rows
