"""reconstruction: how well an autoencoding model reconstructs the real images (MAE, MSE, PSNR, SSIM, MS-SSIM)."""
from __future__ import annotations

import numpy as np

from medgen.evaluation.groups.base import Context, MetricGroup, fmt, fmt_ci, interval_headline


def _metrics(section: dict):
    return [(k, d) for k, d in section.items() if isinstance(d, dict) and "mean" in d]


class Reconstruction(MetricGroup):
    name = "reconstruction"
    needs = frozenset({"model"})
    scope = "run"
    title = "autoencoder reconstruction of the real images"

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
        scores = paired_metrics(real.images, np.concatenate(recon))
        out = {name: {"mean": s.mean, "std": float(np.std(s.per_image)), "settings": s.settings} for name, s in scores.items()}
        if ctx.run.n_resamples and len(real) >= 2:
            from medgen.metrics.intervals import bootstrap_ci

            for name, s in scores.items():  # the mean over images, resampling the images
                out[name]["interval"] = bootstrap_ci(lambda v: v.mean(axis=1), np.asarray(s.per_image, dtype=np.float64),
                                                     n_resamples=ctx.run.n_resamples, vectorized=True)
        out["settings"] = {"n_images": len(real), "split": real.source.get("split")}
        return out

    def headline(self, section: dict) -> dict[str, dict]:
        return {f"reconstruction/{k}": interval_headline(d["mean"], d.get("interval")) for k, d in _metrics(section)}

    def table_rows(self, section: dict) -> list[tuple[str, str, str]]:
        rows = [("", "skipped", section["skipped"])] if "skipped" in section else []
        return rows + [(k.upper() if k != "ms_ssim" else "MS-SSIM", fmt_ci(d["mean"], d.get("interval")), f"± {fmt(d['std'])} (sd over images)") for k, d in _metrics(section)]
