"""utility: train a small classifier on real / synthetic / mixed images, test it on real ones.

The protocol is in :mod:`medgen.evaluation.utility`; this group chooses the sets: the real
training and test splits, and either the given labelled synthetic set or, for a class-conditional
run, images generated per class in proportion to the real training split.
"""
from __future__ import annotations

import numpy as np

from medgen.evaluation.groups.base import Context, MetricGroup, add_row, interval_headline

HEADLINE_METRICS = ("accuracy", "f1_macro")  # per training set; the table has the others


def _cell(mean: float, std: float, ci: dict | None) -> str:
    """'0.983 ± 0.010 [0.950, 1.000]': mean ± std over seeds, then the interval over seeds and test images."""
    text = f"{mean:.3f} ± {std:.3f}"
    return text if not ci else f"{text} [{ci['low']:.3f}, {ci['high']:.3f}]"


def _interval_note(section: dict) -> str:
    """How the intervals were made (from the first one), or "" when the table has none."""
    ci = next((r["intervals"]["accuracy"] for r in section["rows"].values() if r.get("intervals")), None)
    if not ci:
        return ""
    return (f"[{ci['level']:.0%} interval: {ci['method']}; {ci['n']} test images, {ci['n_seeds']} seed(s), "
            f"{ci['n_resamples']} resamples]")


def _generated(ctx: Context, classes: list[str], y_train: np.ndarray):
    """(images, label ids) generated per class, with the source block; or a reason to skip."""
    from medgen.evaluation.generation import generate_cached

    opts, sc = ctx.run.utility, ctx.run.sample
    counts = np.bincount(y_train, minlength=len(classes))
    want = np.round(counts * opts["ratio"]).astype(int)
    gen_ids = np.repeat(np.arange(len(classes)), want)
    if len(gen_ids) < 2:
        return None, f"utility ratio {opts['ratio']} gives fewer than 2 synthetic images"
    steps = sc.steps or ctx.model.num_timesteps
    imgs, ids, _, cached = generate_cached(ctx.model, ctx.run.fingerprint, len(gen_ids), gen_ids, sc.sampler, steps, sc.seed,
                                           sc.guidance, sc.batch_size, ctx.run.cache_dir, ctx.echo)
    source = {"kind": "generated", "sampler": sc.sampler, "steps": steps, "seed": sc.seed, "guidance": sc.guidance,
              "n_images": int(len(imgs)), "per_class": dict(zip(classes, want.tolist())), "ratio": opts["ratio"],
              "reused_from_cache": cached}
    return ((imgs, ids), source), None


class Utility(MetricGroup):
    name = "utility"
    needs = frozenset({"pixels", "training split"})
    scope = "run"
    in_all = False
    title = "train-on-synthetic / test-on-real classifier table"
    meanings = {"accuracy/utility": "accuracy on real test images of a classifier trained on this set (mean over seeds)",
                "f1_macro/utility": "macro F1 on real test images of a classifier trained on this set (mean over seeds)"}

    def compute(self, ctx: Context) -> dict:
        from medgen.evaluation.utility import utility_table

        train_set, test_set, fake, opts = ctx.train, ctx.test, ctx.run.given_fake, ctx.run.utility
        seeds = opts["seeds"]
        seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        if train_set is None or test_set is None or train_set.labels is None or test_set.labels is None:
            return {"skipped": "needs labelled real training and test splits (a run, or --real PREPARED_DATASET)"}
        classes = sorted(set(train_set.labels))
        if len(classes) < 2:
            return {"skipped": f"needs at least 2 classes in the real training split, found {classes}"}
        if fake is None:  # generate a labelled synthetic set from the run
            if not ctx.model.conditional:
                return {"skipped": "needs a class-conditional run (train with --set model.conditional=true)"}
            classes = list(ctx.model.info.labels)
            lookup = {c: i for i, c in enumerate(classes)}
            y_train = np.array([lookup[v] for v in train_set.labels], dtype=np.int64)
            made, reason = _generated(ctx, classes, y_train)
            if made is None:
                return {"skipped": reason}
            syn, syn_source = made
        else:
            if fake.labels is None:
                return {"skipped": "needs labelled synthetic images (class sub-folders or a medgen samples.json)"}
            lookup = {c: i for i, c in enumerate(classes)}
            keep = np.array([v in lookup for v in fake.labels])
            if keep.sum() < 2:
                return {"skipped": f"the synthetic labels {sorted(set(fake.labels))} do not match the real classes {classes}"}
            syn = (fake.images[keep], np.array([lookup[v] for v in fake.labels[keep]], dtype=np.int64))
            y_train = np.array([lookup[v] for v in train_set.labels], dtype=np.int64)
            syn_source = {**fake.source, "n_images": int(keep.sum())}
        te_keep = np.array([v in lookup for v in test_set.labels])
        y_test = np.array([lookup[v] for v in test_set.labels[te_keep]], dtype=np.int64)
        ctx.echo(f"utility: {len(seed_list)} seed(s) x 3 training sets")
        table = utility_table((train_set.images, y_train), (test_set.images[te_keep], y_test), syn, classes, seeds=seed_list,
                              mix_ratio=opts["mix"], settings=opts["settings"],
                              figure=ctx.fig_dir / "utility_confusion.png", echo=ctx.echo,
                              n_resamples=ctx.run.n_resamples)
        table["synthetic"] = syn_source
        table["settings"] = {"ratio": opts["ratio"], "mix_ratio": opts["mix"], "seeds": seed_list,
                             "n_real_train": int(len(train_set)), "n_real_test": int(te_keep.sum()),
                             "real_test_split": test_set.source.get("split")}
        return table

    def headline(self, section: dict) -> dict[str, dict]:
        """{"accuracy/utility-real": ..., "f1_macro/utility-mixed": ...}: each training set's mean score,
        with its interval over seeds and test images (and the number of seeds it rests on)."""
        out = {}
        for scenario, row in (section.get("rows") or {}).items():
            for m in HEADLINE_METRICS:
                ci = (row.get("intervals") or {}).get(m)
                h = interval_headline(row["mean"][m], ci)
                if ci:
                    h["n_seeds"] = ci.get("n_seeds")
                out[f"{m}/utility-{scenario}"] = h
        return out

    def extra_tables(self, section: dict) -> list:
        from rich.markup import escape
        from rich.table import Table

        from medgen.evaluation.utility import METRIC_COLUMNS

        if "skipped" in section:
            ut = Table("utility", title="utility (train on X, test on real)", title_justify="left")
            add_row(ut, "skipped: " + section["skipped"])
            return [ut]
        rows = section["rows"]
        names = list(rows)
        note = _interval_note(section)
        ut = Table("metric", *(f"trained on {n}" for n in names),
                   title=escape(f"utility: test on real ({section['n_test']} images), mean ± std over {len(section['seeds'])} seed(s)"
                                + (" " + note if note else "")),
                   title_justify="left")
        add_row(ut, "n real / synthetic", *(f"{rows[n]['n_train_real']} / {rows[n]['n_train_synthetic']}" for n in names))
        for m in METRIC_COLUMNS:
            add_row(ut, m, *(_cell(rows[n]['mean'][m], rows[n]['std'][m], rows[n].get('intervals', {}).get(m)) for n in names))
        cc = section.get("class_consistency")
        if cc:  # tables from before it was measured have none
            add_row(ut, f"class consistency (chance {cc['chance']:.2f})",
                    *(_cell(cc['mean'], cc['std'], cc.get('intervals', {}).get('mean')) if n == "real" else "" for n in names))
        return [ut]

    def extra_html(self, section: dict) -> str:
        import html

        rows = section.get("rows")
        if not rows:
            return ""
        metrics = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
        out = "<h3>Utility: a classifier trained on each set, tested on real images</h3><table><tr><th>trained on</th>" + "".join(
            f"<th>{m}</th>" for m in metrics) + "</tr>" + "".join(
            f"<tr><th>{html.escape(n)}</th>" + "".join(f"<td>{_cell(r['mean'][m], r['std'][m], r.get('intervals', {}).get(m))}</td>"
                                                      for m in metrics) + "</tr>"
            for n, r in rows.items()) + "</table>"
        note = _interval_note(section)
        out += f"<p>Mean ± standard deviation over seeds {html.escape(note)}.</p>" if note else ""
        cc = section.get("class_consistency")
        if cc:
            out += (f"<p>Class consistency: the real-trained classifier names <b>{_cell(cc['mean'], cc['std'], cc.get('intervals', {}).get('mean'))}</b> of the "
                    f"synthetic images as the class they were generated for (chance {cc['chance']:.2f}; near chance means "
                    "the generator's classes do not differ).</p>")
        return out
