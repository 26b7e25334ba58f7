"""seg_utility: do synthetic image + mask pairs help a segmentation network, and is the lesion where the mask is?

The protocol is in :mod:`medgen.evaluation.seg_utility` (MONAI ``UNet`` trained on real, real+synthetic,
synthetic and K real pairs, Dice and HD95 on the real test split with t intervals over seeds) and the
honesty of its K rows in :mod:`medgen.evaluation.seg_provenance`. It needs a run whose prepared dataset
has masks; ``medgen evaluate RUN --seg-utility`` asks for it too (``--pairs``, ``--k-real``, ``--k-run``).
The section is also written alone to ``RUN/evaluation/seg_utility.json``.
"""
from __future__ import annotations

import html

from medgen.evaluation.groups.base import Context, MetricGroup, add_row, headline, interval_headline

#: the options of ``medgen evaluate --seg-utility`` and their defaults
DEFAULT_OPTIONS = {"pairs": None, "k_real": (), "k_runs": (), "seeds": 3, "settings": None, "n_synthetic": None, "steps": None}


def _iv(x: dict, digits: int) -> str:
    return f"{x['value']:.{digits}f} [{x['low']:.{digits}f}, {x['high']:.{digits}f}]"


def _ci(x: dict) -> dict:
    return headline(x["value"], ci=[x["low"], x["high"]], level=x["level"], method=x["method"], n=x["n"])


class SegUtility(MetricGroup):
    name = "seg_utility"
    needs = frozenset({"pixels", "training split", "masks"})
    scope = "run"
    in_all = False
    title = "segmentation utility of image + mask pairs (Dice/HD95 of a U-Net trained on real, synthetic and K real pairs)"
    meanings = {
        "seg_utility/dice": "Dice of a segmentation U-Net trained on these pairs, on the real test lesions (1 = perfect)",
        "seg_utility/hd95": "95th-percentile Hausdorff distance of that U-Net's lesions, pixels (lower is better)",
        "seg_utility/adherence": "Dice of a real-trained U-Net on the generated images against their conditioning masks "
                                 "(shuffled: against other images' masks, the chance level)",
    }

    def compute(self, ctx: Context) -> dict:
        from medgen.evaluation.seg_utility import run_seg_utility

        if ctx.run.run_dir is None:  # two image sets: no generator whose training pairs could be checked
            return {"skipped": "needs a RUN whose prepared dataset has masks (medgen evaluate RUN --seg-utility)"}
        # a run without masks is refused (exit 2) by run_seg_utility: the group is only ever asked for by name
        opts = {**DEFAULT_OPTIONS, **ctx.run.seg_utility}
        return run_seg_utility(ctx.run.run_dir, opts["pairs"], seeds=opts["seeds"], k_real=opts["k_real"], settings=opts["settings"],
                               n_synthetic=opts["n_synthetic"], k_runs=opts["k_runs"], steps=opts["steps"], echo=ctx.echo,
                               n_resamples=ctx.run.n_resamples)

    def headline(self, section: dict) -> dict[str, dict]:
        out = {}
        for r in section.get("rows", []):
            out[f"seg_utility/dice/{r['train']}"] = _ci(r["dice"])
            out[f"seg_utility/hd95/{r['train']}"] = _ci(r["hd95"])
        a = section.get("adherence")
        if a:
            for k in ("dice_conditioning", "dice_shuffled"):
                ci = (a.get("intervals") or {}).get(k)
                out[f"seg_utility/adherence/{k}"] = interval_headline(a[k], ci) if ci else headline(a[k], n=a["n"])
        return out

    def table_rows(self, section: dict) -> list[tuple[str, str, str]]:
        a = section.get("adherence")
        if not a:
            return []
        return [("lesion where the mask is (Dice)", f"{a['dice_conditioning']:.3f} vs {a['dice_shuffled']:.3f} shuffled",
                 f"{a['n']} generated images, U-Net trained on real pairs")]

    def extra_tables(self, section: dict) -> list:
        from rich.markup import escape
        from rich.table import Table

        if "skipped" in section:
            t = Table("seg_utility", title="segmentation utility", title_justify="left")
            add_row(t, "skipped: " + section["skipped"])
            return [t]
        t = Table("trained on", "n train", "Dice [95 % CI]", "HD95 px [95 % CI]",
                  title=escape(f"segmentation utility: test on {section['n_test']} real lesion images, "
                               f"t intervals over {section['seeds']} seed(s)"), title_justify="left")
        for r in section["rows"]:
            add_row(t, r["train"], r["n_train"], _iv(r["dice"], 3), _iv(r["hd95"], 2))
        return [t]

    def extra_html(self, section: dict) -> str:
        rows = section.get("rows")
        if not rows:
            return ""
        out = ("<h3>Segmentation utility: a U-Net trained on each set of image + mask pairs, tested on real lesions</h3>"
               "<table><tr><th>trained on</th><th>n train</th><th>Dice [95 % CI]</th><th>HD95 px [95 % CI]</th></tr>"
               + "".join(f"<tr><th>{html.escape(r['train'])}</th><td>{r['n_train']}</td><td>{_iv(r['dice'], 3)}</td>"
                         f"<td>{_iv(r['hd95'], 2)}</td></tr>" for r in rows) + "</table>")
        out += (f"<p>{section['n_test']} real test images with a lesion; Student-t intervals over {section['seeds']} seed(s) "
                "(network initialisation and batch order).</p>")
        for kp in section.get("k_pairs", []):
            out += (f"<p>K={kp['k']}: synthetic pairs from {html.escape(kp['generator'])}, which saw "
                    f"{len(kp['generator_saw'])} real pair(s), all among the K; conditioned on the K pairs' lesion masks.</p>")
        a = section.get("adherence")
        if a:
            out += (f"<p>Lesion where the mask is: Dice <b>{a['dice_conditioning']:.3f}</b> against the conditioning masks, "
                    f"{a['dice_shuffled']:.3f} against shuffled masks ({a['n']} generated images).</p>")
        return out

    def runs_columns(self, section: dict) -> dict:
        rows = {r["train"]: r for r in section.get("rows", [])}
        return {f"seg_dice_{k}": rows[k]["dice"]["value"] for k in ("real", "real+synthetic") if k in rows}
