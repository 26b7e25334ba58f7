"""Write docs/results.md from the output folder of experiments/run.py.

    python experiments/results_page.py [--out experiments-output] [--page docs/results.md] [--only MASKS]

With ``--only``, only the named studies' sections are rendered and put in place of the sections of the
same title in the existing page (or inserted before the sampler table); the rest of the page is kept
as it was. Each such section then names its own date, commit and commands, since the page's header
and command list belong to an earlier full run. The sections that read several studies' runs (the
sampler table, memorisation) are rendered again when the output folder holds runs of every study they read.

Every number on the page is read from the files the ``medgen`` commands wrote (metrics.json of
each run, the detect folders, commands.jsonl); figures are copied next to the page. A target is
reported as met or missed from those numbers; a step that failed or did not run is said to be
missing, never filled in.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from datetime import date
from pathlib import Path


MISSING = "not run"


def load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return MISSING
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def with_ci(value, interval: dict | None, digits: int = 3) -> str:
    """'0.812 [0.70, 0.90]': a number with its 95 % interval, read from either form medgen writes
    (``{"low", "high"}`` of medgen.metrics.intervals, or ``{"ci": [low, high]}`` of ``summary_intervals``)."""
    if value is None:
        return MISSING
    bounds = interval_of(value, interval)
    return fmt(value, digits) if bounds is None else f"{fmt(value, digits)} [{fmt(bounds[0], digits)}, {fmt(bounds[1], digits)}]"


def interval_of(value, interval: dict | None) -> tuple[float, float] | None:
    """(low, high) from either interval form (see with_ci), None without one."""
    if value is None or not interval:
        return None
    return (interval["low"], interval["high"]) if "low" in interval else tuple(interval["ci"])


class Page:
    def __init__(self, out: Path, page: Path, only: set[str] | None = None):
        self.out, self.page, self.only = out, page, only
        self.profile = load_json(out / "experiments.json").get("profile", "?")
        self.img_dir = page.parent / "images" / "results"
        self.lines: list[str] = []
        log = [json.loads(line) for line in (out / "commands.jsonl").read_text().splitlines() if line.strip()] \
            if (out / "commands.jsonl").exists() else []
        # a step that failed and was run again later (the runner resumes) counts by its last attempt
        last = {c["name"]: i for i, c in enumerate(log)}
        self.commands = [c for i, c in enumerate(log) if last[c["name"]] == i]

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: list[str], rows: list[list]) -> None:
        self.add("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        for r in rows:
            self.add("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |")
        self.add("")

    def evaluation(self, run: str) -> dict:
        return load_json(self.out / "runs" / run / "metrics.json").get("evaluation", {})

    def anomaly(self, run: str) -> dict:
        return load_json(self.out / "runs" / run / "detect" / "test" / "metrics.json")

    def figure(self, src: Path, name: str, alt: str) -> None:
        """Copy a figure next to the page and show it (or say it is missing)."""
        if not src.exists():
            self.add(f"*({alt}: not produced)*", "")
            return
        self.img_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, self.img_dir / name)
        self.add(f"![{alt}](images/results/{name})", "")

    def histograms(self, run: str, alt: str) -> None:
        self.figure(self.out / "runs" / run / "evaluation" / "histograms.png", f"{run}-histograms.png", alt)

    def seconds(self, study: str) -> float:
        return sum(c["seconds"] for c in self.commands if c["study"] == study)

    def failures(self, study: str) -> list[dict]:
        return [c for c in self.commands if c["study"] == study and c["returncode"] != 0]

    def study_footer(self, study: str) -> None:
        fails = self.failures(study)
        for f in fails:
            self.add(f"**Failed:** `{f['command']}`: {' '.join(f.get('error', []))[-300:]}", "")
        own = [c for c in self.commands if c["study"] == study]
        jobs = max((c.get("jobs", 1) for c in own), default=1)
        wall = ""
        if jobs > 1 and all("started" in c for c in own):  # steps ran side by side: their seconds overlap
            span = max(c["started"] + c["seconds"] for c in own) - min(c["started"] for c in own)
            wall = f", {span / 60:.1f} min of wall time ({jobs} steps at a time, `experiments/run.py --jobs {jobs}`)"
        self.add(f"*{study}: {self.seconds(study) / 60:.1f} min of commands{wall}.*", "")
        if self.only:  # the page's header and command list are from another run: this section names its own
            ran = [c for c in self.commands if c["study"] == study or c["name"] in self.prepared_for(study)]
            commits = ", ".join(f"`{c}`" for c in dict.fromkeys(c["commit"] for c in ran if c.get("commit"))) or "unknown"
            self.add(f"*This section was regenerated alone on {date.today().isoformat()} "
                     f"(`experiments/results_page.py --only {study}`), `{self.profile}` profiles, from commands run at medgen "
                     f"commit {commits}:*", "", "```")
            self.add(*(f"{c['command']}    # {c['seconds']:.0f} s" for c in ran), "```", "")

    def prepared_for(self, study: str) -> set[str]:
        """Names of the data preparations logged under another study that this study's commands use."""
        used = " ".join(c["command"] for c in self.commands if c["study"] == study)
        return {c["name"] for c in self.commands if c["name"].startswith("prepare ") and c["name"].split()[-1] in used}

    def write(self) -> Path:
        self.page.write_text("\n".join(self.lines).rstrip() + "\n")
        return self.page

    def splice(self) -> Path:
        """Put the rendered sections in place of the page's sections of the same title (``## ...``);
        a section the page lacks goes before the sampler table (or at the end)."""
        if not self.page.exists():
            sys.exit(f"error: {self.page}: no page to update; run without --only first")
        page = sections(self.page.read_text().rstrip("\n").split("\n"))
        for title, body in sections(self.lines)[1:]:
            at = next((i for i, (t, _) in enumerate(page) if t == title), None)
            if at is not None:
                page[at] = (title, body)
            else:
                before = next((i for i, (t, _) in enumerate(page) if t.startswith(("## DDIM-50", "## Memorisation", "## The commands"))),
                              len(page))
                page.insert(before, (title, body))
        self.page.write_text("\n".join(line for _, body in page for line in body).rstrip() + "\n")
        return self.page


def sections(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Split markdown lines at each ``## `` heading: (title, lines) pairs, the first one the text before any."""
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in lines:
        if line.startswith("## "):
            out.append((line, []))
        out[-1][1].append(line)
    for _, body in out:  # one blank line between sections, whatever the source had
        while body and not body[-1].strip():
            body.pop()
        body.append("")
    return out


UNCLEAR = "not distinguishable at this n"


def verdict(ok: bool | str | None) -> str:
    """**met**, **missed**, **not measured**, or a judgement given as text (e.g. UNCLEAR)."""
    if isinstance(ok, str):
        return f"**{ok}**"
    return "**not measured**" if ok is None else ("**met**" if ok else "**missed**")


def judge(a: tuple[float, float] | None, b: tuple[float, float] | None) -> str | None:
    """Is A above B? "above" or "below" when the two 95 % intervals do not overlap, else UNCLEAR
    (None without both intervals). Separate intervals on the same test images: conservative, a
    paired test could tell smaller differences."""
    if a is None or b is None:
        return None
    return "above" if a[0] > b[1] else "below" if a[1] < b[0] else UNCLEAR


def s000(p: Page) -> None:
    p.add("## S000: latent diffusion for mammography ROIs, fine-tuning from class 0 to beta", "",
          "Built-in `breast-phantom` (simulated ROIs; column `cohort` = class0 85 % / beta 15 %). Experiment 1: "
          "`mammo-roi-ldm` trained on class 0, then fine-tuned on beta with `--init-from`; experiment 2: beta only. "
          "Both evaluated against the beta test split at three sampling settings (the study used 1000/2000/3000 "
          "DDPM steps with a 3000-step schedule; the small profile trains 1000 timesteps).", "")
    runs = {"experiment 1: class 0 -> beta (fine-tuned)": "s000-beta-finetuned", "experiment 2: beta only": "s000-beta-only"}
    sweeps = {name: p.evaluation(run).get("sweep", []) for name, run in runs.items()}
    settings = [f"{r['sampler']} {r['steps']}" for r in next((s for s in sweeps.values() if s), [])]
    rows = []
    for name, run in runs.items():
        ev = p.evaluation(run)
        rec = ev.get("reconstruction", {})
        mae = rec.get("mae") or {}
        row = [name, with_ci(mae.get("mean"), mae.get("interval"))]
        by = {f"{r['sampler']} {r['steps']}": r for r in sweeps[name]}
        for s in settings:
            r = by.get(s, {})
            ci = r.get("intervals") or {}
            row += [with_ci(r.get("intensity/mse"), ci.get("intensity/mse")), with_ci(r.get("fid/domain"), ci.get("fid/domain")),
                    with_ci(r.get("frd/radiomics"), ci.get("frd/radiomics"))]
        it = ev.get("intensity", {}).get("all") or {}
        row.append(with_ci(it.get("ks_statistic"), (it.get("intervals") or {}).get("ks")))
        rows.append(row)
    header = ["experiment", "autoencoder MAE [95 % CI]"] + [f"{k} ({s})" for s in settings for k in (
        "MSE [95 % CI]", "FID domain [95 % CI]", "FRD radiomics [95 % CI]")] + ["intensity KS [95 % CI]"]
    p.table(header, rows)
    def real_baseline(run: str):  # the same beta test split in both runs: either run's value will do
        intensity = p.evaluation(run).get("intensity") or {}
        return ((intensity.get("all") or {}).get("mse_all_pairs") or {}).get("real_baseline")

    base = next((b for b in map(real_baseline, runs.values()) if b is not None), None)
    if base is not None:
        p.add("MSE: the study's mean MSE of generated against real test images, averaged over every (generated, real) "
              f"pair; between distinct real beta test images it is {base:.3g} "
              "(a generator of new real images would score that; smoother or mean-like images score lower).", "")
    ft = {f"{r['sampler']} {r['steps']}": r.get("fid/domain") for r in sweeps["experiment 1: class 0 -> beta (fine-tuned)"]}
    bo = {f"{r['sampler']} {r['steps']}": r.get("fid/domain") for r in sweeps["experiment 2: beta only"]}
    checks = [(s, ft.get(s), bo.get(s)) for s in settings if ft.get(s) is not None and bo.get(s) is not None]
    met = sum(f <= 0.85 * b for _, f, b in checks)
    ok = None if not checks else met == len(checks)
    fid = compare_section(p, runs)
    need = None
    if fid is not None:
        # the paired interval of A - B decides: a 15 % gain is A - B <= -0.15 B (B taken as fixed at its
        # value); met when the whole interval lies below that, missed when it lies above, else unclear.
        # The ratios per setting (point estimates) are shown beside it
        need = -0.15 * fid["b_value"]
        ok = True if fid["high"] <= need else False if fid["low"] > need else UNCLEAR
    p.add(f"Target: fine-tuned beta FID <= 0.85 x beta-only FID (domain features): {verdict(ok)}"
          + (f" (`compare`: {fid['verdict']}, FID A - B = {with_ci(fid['difference'], fid)}, where the target needs "
             f"A - B <= {need:.3g}, i.e. 0.15 x B's {fid['b_value']:.3g}; " if fid is not None else " (")
          + (f"{met} of {len(checks)} settings; " + ", ".join(f"{s}: {f:.3g} vs 0.85 x {b:.3g} = {0.85 * b:.3g}" for s, f, b in checks) + ")."
             if checks else "no sweep)."), "")
    ev = p.evaluation("s000-beta-finetuned")
    n_real, n_fake = (ev.get(k, {}).get("n_images") for k in ("real", "fake"))
    if n_real is not None and n_real < 50:
        spread = max((max(v) - min(v) for v in ([f for _, f, _ in checks], [b for _, _, b in checks]) if v), default=0.0)
        gap = max((abs(f - b) for _, f, b in checks), default=0.0)
        p.add(f"Read these FIDs with care: each compares {n_fake} generated with {n_real} real beta test images (the "
              "built-in set's beta share of its test split). A Fréchet distance between 128-dimensional features "
              "estimated from so few images is dominated by sampling noise"
              + (f": one run's settings differ from each other by up to {spread:.3g}, more than the two experiments "
                 f"differ at any one setting (up to {gap:.3g})" if checks and spread > gap else "")
              + ". A larger `--n` at `medgen data prepare` (more beta images) is what a firmer verdict needs.", "")
    p.histograms("s000-beta-finetuned", "S000 fine-tuned: real vs generated intensity histograms")
    p.histograms("s000-beta-only", "S000 beta only: real vs generated intensity histograms")
    p.study_footer("S000")


def compare_section(p: Page, runs: dict[str, str]) -> dict | None:
    """The table of `medgen compare RUN_A RUN_B` (runs/s000-compare.done); returns its FID comparison."""
    res = load_json(p.out / "runs" / "s000-compare.done")
    if not res.get("metrics"):
        return None
    names = {f"runs/{run}": label.split(":")[0] for label, run in runs.items()}
    label = lambda r: names.get(r, r)  # noqa: E731
    p.add(f"`medgen compare` of the two runs: {res['extractor']} features of the same {res['n_real']} real beta test images, "
          f"{res['n_generated']} generated per run, {res['n_resamples']} paired resamples; A = {label(res['runs'][0])}, "
          f"B = {label(res['runs'][1])}. Difference A - B with its 95 % interval; \"detectable\": the smallest difference "
          "this n could detect.", "")
    rows = []
    for metric, d in res["metrics"].items():
        for c in d["comparisons"]:
            rows.append([metric, with_ci(d["per_run"][c["a"]]["value"], d["per_run"][c["a"]]),
                         with_ci(d["per_run"][c["b"]]["value"], d["per_run"][c["b"]]),
                         with_ci(c["difference"], c), fmt(c.get("smallest_detectable_difference")), c["verdict"]])
    p.table(["metric", "A [95 % CI]", "B [95 % CI]", "A - B [95 % CI]", "detectable", "verdict"], rows)
    fid = res["metrics"].get("fid", {})
    first = fid.get("comparisons", [None])[0]
    return None if first is None else {**first, "b_value": fid["per_run"][first["b"]]["value"]}


def s002(p: Page) -> None:
    p.add("## S002: 3D DDPM on MNI152 sub-volumes, MSE against L1 loss", "",
          "`dbt-ddpm-3d` on stacks of parallel MNI152 slices (built-in `mni152` with `--size D H W`), once with the "
          "MSE noise loss and once with L1 (the study's open question). Bimodality: Sarle's coefficient (> 0.555 "
          "suggests two modes) and a two-component Gaussian mixture, of real and generated voxel intensities.", "")
    rows = []
    for loss in ("mse", "l1"):
        ev = p.evaluation(f"s002-{loss}")
        it = ev.get("intensity", {}).get("all") or {}
        ci = it.get("intervals") or {}
        bm = it.get("bimodality") or {}
        mem = (ev.get("memorisation") or {}).get("pixels") or {}
        rows.append([loss.upper(), with_ci(it.get("ks_statistic"), ci.get("ks")), with_ci(it.get("wasserstein"), ci.get("wasserstein")),
                     (bm.get("real") or {}).get("bimodality_coefficient"), (bm.get("fake") or {}).get("bimodality_coefficient"),
                     str((bm.get("fake") or {}).get("gmm_bimodal", MISSING)), with_ci(mem.get("fraction_flagged"), mem.get("fraction_flagged_ci"))])
    p.table(["loss", "intensity KS [95 % CI]", "Wasserstein [95 % CI]", "bimodality coeff. real", "bimodality coeff. generated",
             "generated bimodal (GMM)", "near-copies (pixels) [95 % CI]"], rows)
    p.add("Intervals: bootstrap over volumes, real and generated drawn independently (KS and Wasserstein of the pooled "
          "voxels, shifted percentile); near-copies exact binomial. The bimodality coefficients describe the pooled "
          "voxels and carry no interval.", "")
    for loss in ("mse", "l1"):
        p.histograms(f"s002-{loss}", f"S002 {loss.upper()}: intensity histograms")
    p.study_footer("S002")


def s003(p: Page) -> None:
    p.add("## S003: anomaly detection on brain-lesions (trained on normal slices only)", "",
          "Built-in `brain-lesions` (real MNI152 anatomy with simulated glioma / meningioma / pituitary lesions and "
          "exact masks). Each detector is trained on the normal training slices and scored on the test split with "
          "`medgen detect RUN` defaults (threshold at 5 % FPR on the normal validation slices).", "")
    rows, pix = [], {}
    for name, run in (("S003 autoencoder (`brain-ae-anomaly`)", "s003-ae"), ("VAE (`brain-tumor-vae-pretrain` on normals)", "s003-vae"),
                      ("diffusion, AnoDDPM-style (`brain-ddpm-anomaly`)", "s003-ddpm"),
                      ("self-supervised segmenter (`brain-selfsup-anomaly`)", "s003-selfsup")):
        a = p.anomaly(run)
        im, px, pf = a.get("image", {}), a.get("pixel", {}), a.get("pixel_foreground", {})
        pix[run] = px.get("auroc")
        rows.append([name, with_ci(im.get("auroc"), im.get("auroc_interval")), with_ci(im.get("auprc"), im.get("auprc_interval")),
                     with_ci(im.get("fpr_at_threshold"), im.get("fpr_at_threshold_interval")), px.get("auroc"),
                     with_ci(pf.get("auroc"), pf.get("auroc_interval")), px.get("auprc"),
                     with_ci(pf.get("dice_best"), pf.get("dice_best_interval")), px.get("dice_at_threshold")])
    p.table(["detector", "image AUROC [95 % CI]", "image AUPRC [95 % CI]", "held-out FPR (target 0.05) [95 % CI]", "pixel AUROC (all)",
             "pixel AUROC (brain) [95 % CI]", "pixel AUPRC", "best Dice (brain) [95 % CI]", "Dice at threshold"], rows)
    p.add("Intervals: bootstrap over test images, stratified by class (image and brain-pixel numbers; the pixel ones "
          "recompute the pooled statistic per resample); the false-positive rate's is exact binomial over the held-out "
          "normal images.", "")
    ds = p.anomaly("s003-ddpm").get("settings") or {}
    if "t_start" in ds:
        p.add(f"The diffusion detector noised each image to t = {ds['t_start']} of {ds['T']}, walked "
              f"{ds.get('reverse_steps', ds.get('steps'))} {ds.get('sampler', '')} steps back, and compared it with the mean of "
              f"{ds.get('draws', 1)} such reconstruction{'s' if ds.get('draws', 1) != 1 else ''}, each from its own noise.", "")
    brain = {run: (pf.get("auroc"), pf.get("auroc_interval"))
             for run in ("s003-ddpm", "s003-ae") for pf in [p.anomaly(run).get("pixel_foreground") or {}]}
    side = judge(*(interval_of(*brain[run]) for run in ("s003-ddpm", "s003-ae")))
    if side is not None:  # judged on the brain-pixel AUROC, the one with an interval
        ok = {"above": True, "below": False}.get(side, UNCLEAR)
        p.add(f"Target: the diffusion detector beats the autoencoder on pixel AUROC: {verdict(ok)} (brain pixels: "
              f"{with_ci(*brain['s003-ddpm'])} vs {with_ci(*brain['s003-ae'])}; all pixels: {fmt(pix['s003-ddpm'])} vs "
              f"{fmt(pix['s003-ae'])}; met or missed only where the two intervals do not overlap).", "")
    else:
        ok = None if pix.get("s003-ddpm") is None or pix.get("s003-ae") is None else pix["s003-ddpm"] > pix["s003-ae"]
        p.add(f"Target: the diffusion detector beats the autoencoder on pixel AUROC: {verdict(ok)}"
              + (f" ({pix['s003-ddpm']:.3f} vs {pix['s003-ae']:.3f})." if ok is not None else "."), "")
    p.figure(p.out / "runs" / "s003-ae" / "detect" / "test" / "figure.png", "s003-ae-figure.png", "S003 autoencoder: error maps")
    p.figure(p.out / "runs" / "s003-ddpm" / "detect" / "test" / "figure.png", "s003-ddpm-figure.png", "diffusion detector: error maps")
    p.study_footer("S003")


S004_RUNS = {"cGAN": "s004-cgan", "conditional WGAN-GP": "s004-cwgan-gp", "CVAE": "s004-cvae", "CVAE-transfer": "s004-cvae-transfer",
             "conditional LDM": "s004-ldm", "conditional pixel DDPM": "s004-ddpm"}


def s004(p: Page) -> None:
    p.add("## S004: generators judged by a tumour classifier", "",
          "Built-in `brain-lesions`, four classes. For each class-conditional generator, the same small CNN is trained "
          "on real training images, on synthetic images only (as many per class as real ones), and on real + synthetic "
          "(mixed), and tested on the real test split (`medgen evaluate RUN --utility`); mean over seeds with a 95 % "
          "bootstrap interval over seeds and test images (mean ± std where a run has no interval). "
          "KS: two-sample Kolmogorov-Smirnov statistic of real vs generated pixel intensities, as in the study's slides. "
          "Class consistency: the share of synthetic images that the real-trained classifier names as the class they "
          "were generated for (chance 0.25): whether the generator's classes differ at all. "
          "The unconditional WGAN-GP (one run per class) is not in this table: the utility table needs one "
          "class-conditional model.", "")
    rows, best_gap = [], []
    for name, run in S004_RUNS.items():
        ev = p.evaluation(run)
        util = dict((ev.get("utility") or {}).get("rows") or {})
        if "real+synthetic" in util:  # medgen's name for the mixed training set
            util["mixed"] = util.pop("real+synthetic")
        def cell(sc, m="accuracy"):  # with the interval over seeds and test images where the run has it, else ± std
            if sc not in util:
                return MISSING
            ci = (util[sc].get("intervals") or {}).get(m)
            return with_ci(util[sc]["mean"][m], ci) if ci else f"{util[sc]['mean'][m]:.3f} ± {util[sc]['std'][m]:.3f}"

        it = ev.get("intensity", {}).get("all") or {}
        ks = with_ci(it.get("ks_statistic"), (it.get("intervals") or {}).get("ks"))
        cc = (ev.get("utility") or {}).get("class_consistency")
        cc_ci = ((cc or {}).get("intervals") or {}).get("mean")
        summ, summ_ci = ev.get("summary") or {}, ev.get("summary_intervals") or {}
        rows.append([name, MISSING if not cc else with_ci(cc["mean"], cc_ci) if cc_ci else f"{cc['mean']:.3f} ± {cc['std']:.3f}",
                     cell("real"), cell("synthetic"), cell("mixed"), cell("real", "f1_macro"), cell("synthetic", "f1_macro"),
                     cell("mixed", "f1_macro"), cell("mixed", "precision_macro"), cell("mixed", "recall_macro"), ks,
                     with_ci(summ.get("precision/domain"), summ_ci.get("precision/domain")),
                     with_ci(summ.get("recall/domain"), summ_ci.get("recall/domain"))])
        if "real" in util and "mixed" in util:
            best_gap.append((name, util["mixed"]["mean"]["accuracy"], util["real"]["mean"]["accuracy"],
                             judge(*(interval_of(util[sc]["mean"]["accuracy"], (util[sc].get("intervals") or {}).get("accuracy"))
                                     for sc in ("mixed", "real")))))
    p.table(["generator", "class consistency", "accuracy real", "accuracy synthetic", "accuracy mixed", "F1 macro real", "F1 macro synthetic",
             "F1 macro mixed", "precision macro mixed", "recall macro mixed", "KS [95 % CI]",
             "precision (domain features)", "recall (domain features)"], rows)
    sides = [side for *_, side in best_gap]
    if best_gap and None not in sides:  # with intervals: ties are "not distinguishable", not "met"
        ok = True if "above" in sides else False if set(sides) == {"below"} else UNCLEAR
        how = "; met where a mixed interval lies above the real one, missed where every one lies below"
    else:
        ok = None if not best_gap else any(m >= r for _, m, r, _ in best_gap)
        how = ""
    p.add(f"Target: at least one generator's mixed-data classifier >= the real-only classifier: {verdict(ok)}"
          + (" (accuracy, " + ", ".join(f"{n}: {m:.3f} vs {r:.3f}" for n, m, r, _ in best_gap) + how
             + "). The study: mixed 0.936, real only 0.963." if best_gap else "."), "")
    p.add("How each family's small profile was chosen (the old and new recipes side by side, the MONAI tutorial's "
          "recipe as an outside reference, radiomics features, per-class numbers and grids): "
          "[sample-quality.md](sample-quality.md).", "")
    p.study_footer("S004")


def masks(p: Page) -> None:
    p.add("## Mask-conditioned synthesis: image + mask pairs for a segmentation network", "",
          "Built-in `brain-lesions` (real MNI152 anatomy, simulated lesions with exact masks). `brain-lesion-mask-ddpm` "
          "(SPADE diffusion U-Net conditioned on the lesion mask and class) trained on all training pairs, and once on "
          "K = 8 lesion pairs only. `medgen evaluate RUN --seg-utility --k-run K_RUN`: a small MONAI U-Net trained on each set "
          "of pairs, tested on the real test slices with a lesion; Dice and HD95 (pixels) with 95 % t intervals over "
          "seeds. The synthetic pairs of the full rows are generated on the training masks; those of the K rows by the "
          "K-pair run on the masks of its K pairs (a generator that saw more real pairs is refused for K rows). "
          "See [guide-masks.md](guide-masks.md).", "")
    su = p.evaluation("masks-ddpm").get("seg_utility") or {}
    iv = lambda x, d: f"{x['value']:.{d}f} [{x['low']:.{d}f}, {x['high']:.{d}f}]"  # noqa: E731
    rows = [[r["train"], r["n_train"], iv(r["dice"], 3), iv(r["hd95"], 2)] for r in su.get("rows", [])]
    p.table(["trained on", "n train", "Dice [95 % CI]", "HD95 px [95 % CI]"], rows or [[MISSING, None, MISSING, MISSING]])
    if su.get("rows"):
        p.add(f"{su['n_test']} real test images with a lesion, {su['seeds']} seeds (network initialisation and batch order); "
              f"{su['n_synthetic']} synthetic pairs in each synthetic set.", "")
    for kp in su.get("k_pairs", []):
        p.add(f"K = {kp['k']}: synthetic pairs from `{Path(kp['generator']).name}`, which saw {len(kp['generator_saw'])} real "
              f"pair(s) ({', '.join(kp['generator_saw'][:8])}{', ...' if len(kp['generator_saw']) > 8 else ''}), all among the K "
              f"pairs; conditioned on their {len(kp['mask_ids'])} lesion mask(s).", "")
    by = {r["train"]: r["dice"] for r in su.get("rows", [])}
    for k in (kp["k"] for kp in su.get("k_pairs", [])):
        a, b = by.get(f"{k} real+synthetic"), by.get(f"{k} real")
        if a and b:
            p.add(f"With {k} real pairs, adding synthetic pairs moves Dice from {iv(b, 3)} to {iv(a, 3)}: "
                  + ("the intervals do not overlap." if a["low"] > b["high"] or a["high"] < b["low"] else
                     "the intervals overlap, so this run does not separate the two."), "")
    ad = su.get("adherence")
    ok = None if not ad else ad["dice_conditioning"] >= 0.5 and ad["dice_shuffled"] <= 0.5 * ad["dice_conditioning"]
    p.add("Target: the lesion is where the mask is: a U-Net trained on real pairs finds it in the generated images with "
          f"Dice >= 0.5 against the conditioning masks, and at most half that against shuffled masks: {verdict(ok)}"
          + (f" ({ad['dice_conditioning']:.3f} vs {ad['dice_shuffled']:.3f} shuffled, {ad['n']} generated images)." if ad else "."), "")
    p.figure(p.out / "runs" / "masks-ddpm" / "evaluation" / "seg-pairs" / "pairs.png", "masks-ddpm-pairs.png",
             "mask, generated image, overlay")
    p.study_footer("MASKS")


SCARCE_RUNS = {"mammo-roi-ldm": "scarce-ldm", "vae-gan": "scarce-vaegan"}
SCARCE_K = (20, 50)


def scarce(p: Page) -> None:
    p.add("## Scarce class: synthetic images against classical augmentation", "",
          "Built-in `breast-phantom` (three classes), `calcification` cut to K real training images (the other classes "
          "unchanged). Each generator is trained on `normal|mass`, then fine-tuned with `--init-from` on exactly the K kept "
          "images (`data pick` + `--subset id=@FILE`); `medgen scarce` refuses a generator that saw any other image of the "
          "class. The small CNN is trained on the cut set, + classical augmentation of the K images (MONAI flips, affine, "
          "elastic, intensity), + the generator's images of the class, + both (topped up to the class's full training "
          "count), and tested on the whole real test split; 95 % intervals: bootstrap over seeds and test images. "
          "See [evaluation.md](evaluation.md#scarce-class-benchmark-medgen-scarce).", "")
    iv = lambda x: f"{x['value']:.3f} [{x['low']:.3f}, {x['high']:.3f}]"  # noqa: E731
    rows, verdict_lines, found = [], [], False
    for preset, tag in SCARCE_RUNS.items():
        for k in SCARCE_K:
            res = load_json(p.out / "runs" / f"{tag}-k{k}" / "scarce" / f"calcification-K{k}.json")
            if not res:
                rows.append([f"`{preset}`", k, MISSING, MISSING, MISSING, MISSING])
                continue
            found = True
            for scenario, r in res["rows"].items():
                rows.append([f"`{preset}`", k, scenario, iv(r["class_recall"]), iv(r["class_f1"]), iv(r["balanced_accuracy"])])
            saw = res.get("generator_saw", {}).get("ids_of_class", [])
            judged = res["verdicts"]["balanced_accuracy"]
            verdict_lines.append(
                f"`{preset}`, K = {k} ({len(res['seeds'])} seeds, {res['n_test_class']} of {res['n_test']} test images of the "
                f"class; the generator saw {len(saw)} image(s) of the class, all among the K): balanced accuracy, "
                + "; ".join(f"{name}: {v['verdict']} (difference {v['difference']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}])"
                            for name, v in judged.items()) + ".")
    p.table(["generator", "K", "training set", "class recall", "class F1", "balanced accuracy"], rows)
    for line in verdict_lines:
        p.add(line, "")
    if found:
        p.add("Verdicts: paired bootstrap of the difference, Holm over the two comparisons per metric. The intervals shown "
              "are the plain 95 % ones; a verdict needs the Holm-adjusted level, so an interval just clear of 0 can still "
              "read \"no difference detectable\". The JSON of each run (`runs/<run>/scarce/calcification-K<K>.json`) has the "
              "class recall and F1 verdicts, the smallest difference this n could detect, and the ids the generator saw, "
              "kept and held back.", "")
    p.study_footer("SCARCE")


def samplers(p: Page) -> None:
    p.add("## DDIM-50 against DDPM-1000 on the same model", "",
          "From the S000 fine-tuned run's sampler sweep: time per image and FID against the beta test split.", "")
    rows = [[f"{r['sampler']} {r['steps']}", r.get("seconds_per_image"),
             with_ci(r.get("fid/domain"), (r.get("intervals") or {}).get("fid/domain")),
             with_ci(r.get("frd/radiomics"), (r.get("intervals") or {}).get("frd/radiomics"))]
            for r in p.evaluation("s000-beta-finetuned").get("sweep", [])]
    p.table(["sampler", "seconds / image", "FID (domain) [95 % CI]", "FRD (radiomics) [95 % CI]"], rows or [[MISSING, None, None, None]])


MEMORISATION_RUNS = {"S000 fine-tuned": "s000-beta-finetuned", "S000 beta only": "s000-beta-only", "S002 MSE": "s002-mse",
                     "S002 L1": "s002-l1", **S004_RUNS}


def memorisation(p: Page) -> None:
    p.add("## Memorisation", "",
          "Fraction of generated images whose nearest training image is closer than the 5 % quantile of the real "
          "test-to-train nearest distances, in pixel space and in the domain-feature space. The baseline is the "
          "fraction the same rule flags among real test images (0.05 with many test images; coarser with few, e.g. "
          "1 of 6); more than the baseline means near-copies. Read the pixel column of a blurry generator (the VAEs) "
          "with the feature column beside it: a smooth, average-looking image is close in pixels to many training "
          "images without copying any of them.", "")
    rows = []
    for name, run in MEMORISATION_RUNS.items():
        mem = p.evaluation(run).get("memorisation") or {}
        px = mem.get("pixels") or {}
        ft = next((v for k, v in mem.items() if k != "pixels" and isinstance(v, dict) and "fraction_flagged" in v), {})
        rows.append([name, with_ci(px.get("fraction_flagged"), px.get("fraction_flagged_ci")),
                     with_ci(ft.get("fraction_flagged"), ft.get("fraction_flagged_ci")), px.get("expected_fraction"), px.get("binomial_pvalue")])
    p.table(["generator", "near-copies (pixels) [95 % CI]", "near-copies (features) [95 % CI]", "baseline (test to train)",
             "p (binomial, pixels)"], rows)
    p.add("Intervals: exact binomial (Clopper-Pearson) over the generated images.", "")


def commands(p: Page) -> None:
    p.add("## The commands", "", "Run from the output folder, in this order (wall time on this machine):", "", "```")
    for c in p.commands:
        p.add(f"{c['command']}    # {c['seconds']:.0f} s" + ("" if c["returncode"] == 0 else f"  FAILED (exit {c['returncode']})"))
    p.add("```", "")


STUDY_SECTIONS = {"S000": s000, "SCARCE": scarce, "S002": s002, "S003": s003, "S004": s004, "MASKS": masks}
# sections that read the runs of several studies, with those runs grouped by study: with --only they
# are rendered again when OUT holds at least one run of every group (e.g. an output folder that gathers
# the studies' runs); a run it lacks is then shown as not run, which is what that folder says
SHARED_SECTIONS = ((samplers, [("s000-beta-finetuned",)]),
                   (memorisation, [("s000-beta-finetuned", "s000-beta-only"), ("s002-mse", "s002-l1"), tuple(S004_RUNS.values())]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="experiments-output")
    ap.add_argument("--page", default="docs/results.md")
    ap.add_argument("--only", default="", help=f"comma list of studies ({','.join(STUDY_SECTIONS)}): update only their "
                                               "sections of an existing page")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not (out / "commands.jsonl").exists():
        sys.exit(f"error: {out / 'commands.jsonl'} not found: run experiments/run.py first")
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - set(STUDY_SECTIONS):
        sys.exit(f"error: --only: unknown study {', '.join(sorted(only - set(STUDY_SECTIONS)))}; "
                 f"choose from {', '.join(STUDY_SECTIONS)}")
    p = Page(out, Path(args.page), only or None)
    if only:
        for study in STUDY_SECTIONS:
            if study in only:
                STUDY_SECTIONS[study](p)
        for section, groups in SHARED_SECTIONS:
            if all(any((out / "runs" / r / "metrics.json").exists() for r in runs) for runs in groups):
                section(p)
                p.add(f"*This section was regenerated on {date.today().isoformat()} from the runs in the output folder "
                      "(`experiments/results_page.py --only`); the commands that made them are listed under their studies.*", "")
        print(p.splice())
        return 0
    total = sum(c["seconds"] for c in p.commands) / 60
    p.add("# Reproducing the five studies on the built-in data", "",
          f"Generated by `make experiments` on {date.today().isoformat()} ({platform.machine()}, "
          f"{__import__('os').cpu_count()} CPU cores, {total:.0f} min of commands), `{p.profile}` profiles, fixed seeds, "
          "public CLI only. Every number below is read from the output files of those commands "
          "(`experiments/results_page.py`); nothing is typed in by hand. The built-in data are stand-ins for the "
          "studies' data (simulated mammography ROIs, real MNI152 anatomy with simulated lesions), so the numbers "
          "show what medgen's pipelines do, not the studies' clinical results. S001 (the survey) has no protocol "
          "to rerun; its VAE-GAN is in [models-gan-vae.md](models-gan-vae.md).", "")
    commits = list(dict.fromkeys(c["commit"] for c in p.commands if c.get("commit")))
    if commits:
        p.add(f"medgen commit{'s' if len(commits) > 1 else ''} the commands ran at: "
              + ", ".join(f"`{c}`" for c in commits) + ".", "")
    ran = {c["study"] for c in p.commands if c["returncode"] == 0 and not c["name"].startswith("prepare")}
    missing = [st for st in ("S000", "S002", "S003", "S004", "SCARCE", "MASKS") if st not in ran]
    if missing:
        p.add(f"**This run is incomplete:** nothing was trained for {', '.join(missing)}; those tables say \"not run\". "
              "`make experiments` resumes from the output folder.", "")
    for section in (s000, scarce, s002, s003, s004, masks, samplers, memorisation, commands):
        section(p)
    print(p.write())
    return 0


if __name__ == "__main__":
    sys.exit(main())
