"""Sample quality of one preset's recipe on built-in data: is each class what was asked for, is the
variety there, does the texture look real? Prints one JSON object.

    python bench/bench_sample_quality.py PRESET [--profile=small] [--source=builtin:brain-lesions]
        [--size=64] [--data=DIR] [--run=DIR] [--out=DIR] [--set=KEY=VALUE ...] [--init-from=RUN]
        [--sampler=ddim] [--steps=N] [--guidance=G] [--seed=0] [--n=IMAGES_PER_CLASS]

It calls what the public commands call: ``medgen data prepare`` (unless ``--data``), ``medgen
train PRESET --profile P --set ... [--init-from RUN]`` (unless ``--run`` names a finished run) and the sampling of
``medgen sample``; then, against the real TEST split:

* class consistency per class (Shmelkov et al.'s GAN-test, as in ``medgen evaluate --utility``):
  the real-trained domain classifier that ``medgen evaluate`` trains and caches for the dataset
  names the class of every generated image; exact binomial (Clopper-Pearson) 95 % intervals. The
  same classifier's score on the real test images is the ceiling. For a model that reconstructs
  (VAE, VAE-GAN: encoder mean through the decoder, given the true label; latent diffusion: its
  autoencoder), the same score on the reconstructed real test images is the ceiling of the model
  itself: a class its reconstructions lose, no sampling from its latent space can draw. Their
  radiomics FRD (``reconstructed_test`` under ``radiomics`` and ``radiomics:foreground``) is, for a
  latent diffusion model, the ceiling for texture in practice: its samples come no closer to real
  than its autoencoder's reconstructions of real images (not a bound, and not for a VAE or VAE-GAN
  sampled from its prior, whose samples can land closer than the reconstructions);
* precision / recall / density / coverage (``medgen.metrics.prdc``) and Fréchet distance / KID in
  the domain features AND in pyradiomics features (the label-trained domain features are blind to
  texture), the latter twice: over the whole image (``radiomics``, what ``medgen evaluate
  --features radiomics`` uses) and over the foreground (``radiomics:foreground``, pixels above 5 %
  of the image's range). The whole-image features are dominated by the background: on MNI152
  slices, whose background is exactly 0, Gaussian noise of std 0.01 added to real images (invisible)
  takes the whole-image FRD from 4.4 to 661, while the foreground mask looks at the tissue. The
  radiomics Fréchet distance is the FRD, with a bootstrap interval over images, and the FRD between
  two disjoint real splits (val against test, same sizes) as its floor;
* diversity: the mean pairwise feature distance within each class, generated over real (1.0: as
  varied as the real images; collapse goes to 0);
* CPU seconds (user + system of this process and its children) of training and sampling.

Generated images: ``--n`` per class (default: as many as the real test split has of that class,
so both sides of every metric have the same size), the preset's sampler, steps and guidance
unless given. ``--out`` keeps the data and the run (default: a temporary folder).
"""
from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine

TARGETS = {"class_consistency": 0.85, "recall": 0.5, "coverage": 0.5, "diversity_ratio": 0.7, "frd_ratio": 5.0}
BOOTSTRAP = 200


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _args(argv: list[str]) -> tuple[str, dict, list[str]]:
    positional = [a for a in argv if not a.startswith("--")]
    if len(positional) != 1:
        sys.exit(__doc__.split("\n\n")[1])
    opts, sets = {}, []
    for a in argv:
        if a.startswith("--set="):
            sets.append(a[len("--set="):])
        elif a.startswith("--"):
            key, _, value = a[2:].partition("=")
            opts[key] = value
    return positional[0], opts, sets


def _interval(k: int, n: int) -> list[float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return [float(ci.low), float(ci.high)]


def _classifier_logits(domain):
    """The domain classifier's logits for a batch of images in [0, 1] (N, C, H, W)."""
    import torch

    from medgen.evaluation.domain import to_work

    def logits_of(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return domain.net(to_work(torch.from_numpy(np.ascontiguousarray(x)), domain.size)).numpy()
    return logits_of


def _consistency(logits_of, images: np.ndarray, asked: np.ndarray, names: list[str]) -> dict:
    """Share of images the classifier names as the class asked for, overall and per class."""
    named = np.asarray(names, dtype=object)[logits_of(images).argmax(1)]
    hit = named == asked
    per_class = {str(c): {"value": float(hit[asked == c].mean()), "ci95": _interval(int(hit[asked == c].sum()), int((asked == c).sum())),
                          "n": int((asked == c).sum())} for c in sorted(set(asked))}
    return {"value": float(hit.mean()), "ci95": _interval(int(hit.sum()), len(hit)), "per_class": per_class,
            "min_per_class": min(v["value"] for v in per_class.values())}


def _reconstructed(model, images: np.ndarray, ids: np.ndarray | None, batch: int = 32) -> np.ndarray | None:
    """The model's reconstructions of ``images`` (true labels ``ids`` given where it takes them), or None."""
    import inspect

    import torch

    try:
        takes_labels = ids is not None and "labels" in inspect.signature(model.reconstruct).parameters
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).to(model.device)
                kw = {"labels": torch.from_numpy(ids[i:i + batch]).long().to(model.device)} if takes_labels else {}
                out.append(model.reconstruct(x, **kw).float().cpu().numpy())
    except NotImplementedError:  # GANs and pixel diffusion do not reconstruct
        return None
    return np.clip(np.concatenate(out), 0, 1)


def _diversity(f_fake: np.ndarray, fake_labels: np.ndarray, f_real: np.ndarray, real_labels: np.ndarray) -> dict:
    """Mean pairwise Euclidean feature distance within each class, generated / real."""
    from scipy.spatial.distance import pdist

    out = {}
    for c in sorted(set(real_labels)):
        g, r = f_fake[fake_labels == c], f_real[real_labels == c]
        if len(g) < 2 or len(r) < 2:
            continue
        dg, dr = float(pdist(g).mean()), float(pdist(r).mean())
        out[str(c)] = {"generated": dg, "real": dr, "ratio": dg / dr if dr > 0 else None}
    ratios = [v["ratio"] for v in out.values() if v["ratio"] is not None]
    return {"per_class": out, "min_ratio": min(ratios) if ratios else None}


def _frd_interval(f_real: np.ndarray, f_fake: np.ndarray, seed: int = 0) -> list[float]:
    """95 % percentile bootstrap over images (both sides resampled) of the Fréchet distance. Drawing
    with replacement repeats images, which inflates a Fréchet distance: the interval can sit above
    the point estimate (compare it with the real-vs-real interval, made the same way)."""
    from medgen.metrics import fid_from_features

    rng = np.random.default_rng(seed)
    values = [fid_from_features(f_real[rng.integers(0, len(f_real), len(f_real))], f_fake[rng.integers(0, len(f_fake), len(f_fake))])
              for _ in range(BOOTSTRAP)]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _compare(f_real: np.ndarray, f_other: np.ndarray) -> dict:
    from medgen.metrics import fid_from_features, kid, prdc

    k = min(5, len(f_real) - 1, len(f_other) - 1)
    kid_mean, _ = kid(f_real, f_other, subsets=1, subset_size=min(len(f_real), len(f_other)))
    return {**prdc(f_real, f_other, k=k), "k": k, "fd": float(fid_from_features(f_real, f_other)), "kid": float(kid_mean)}


def _domain_classifier(ds, train_split: str, val_split: str, cache: Path):
    """The domain extractor ``medgen evaluate`` trains for this dataset (the same cache entry)."""
    from medgen.evaluation.domain import DomainSettings, build_domain_extractor

    settings = DomainSettings()
    rows, val_rows = ds.select(train_split), ds.select(val_split)
    if len(rows) > settings.max_train:
        rows = np.sort(np.random.default_rng(settings.seed).choice(rows, settings.max_train, replace=False))
    return build_domain_extractor(np.asarray(ds.images[rows], dtype=np.float32), ds.label_ids(rows), cache,
                                  np.asarray(ds.images[val_rows], dtype=np.float32), ds.label_ids(val_rows), ds.labels,
                                  settings, trained_on=f"{ds.root} (splits {train_split}/{val_split})", echo=lambda *_: None)


def main() -> None:
    import torch

    from medgen.data.dataset import PreparedDataset
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.evaluation.features import RadiomicsExtractor, standardise
    from medgen.metrics import fid_from_features
    from medgen.progress import set_quiet
    from medgen.rundir import RunDir
    from medgen.sampling import generate, load_run_model
    from medgen.training import train

    preset, opts, sets = _args(sys.argv[1:])
    set_quiet(True)
    profile = opts.get("profile", "small")
    keep = opts.get("out")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="medgen-quality-"))
    root.mkdir(parents=True, exist_ok=True)
    times: dict = {}

    data = Path(opts["data"]) if "data" in opts else root / "data"
    if "data" not in opts and not (data / "stats.json").exists():
        side = int(opts.get("size", 64))
        prepare(opts.get("source", "builtin:brain-lesions"), data, PrepareOptions(size=(side, side)), force=True)
    run = Path(opts["run"]) if "run" in opts else root / "run"
    if not (RunDir(run).exists() and RunDir(run).status().get("state") == "finished"):
        c0, w0 = _cpu_seconds(), time.time()
        train(preset, data, run, profile=profile, overrides=sets, init_from=opts.get("init-from"), force=True,
              echo=lambda *_: None)
        times["train"] = {"cpu_seconds": _cpu_seconds() - c0, "wall_seconds": time.time() - w0}

    cfg, model, _ = load_run_model(run)
    ds = PreparedDataset(json.loads((run / "data.json").read_text())["dataset"])
    test_rows, val_rows = ds.select("test"), ds.select("val")
    real, real_labels = np.asarray(ds.images[test_rows], dtype=np.float32), ds.index["label"].to_numpy()[test_rows].astype(object)
    real2, real2_labels = np.asarray(ds.images[val_rows], dtype=np.float32), ds.index["label"].to_numpy()[val_rows].astype(object)

    sc = cfg.sample
    sampler, steps = opts.get("sampler", sc.sampler), int(opts["steps"]) if "steps" in opts else sc.steps
    guidance, seed = float(opts.get("guidance", sc.guidance)), int(opts.get("seed", sc.seed))
    conditional = bool(getattr(model, "conditional", False))
    names = list(model.info.labels)
    if conditional:
        per_class = {c: int(opts["n"]) if "n" in opts else int((real_labels == c).sum()) for c in names}
        ids = torch.tensor([names.index(c) for c in names for _ in range(per_class[c])], dtype=torch.long)
    else:
        ids = None
    n = len(ids) if ids is not None else int(opts.get("n", len(real)))
    c0, w0 = _cpu_seconds(), time.time()
    fake, fake_ids = generate(model, n, ids, sampler, steps, guidance, seed, sc.batch_size)
    times["sample"] = {"cpu_seconds": _cpu_seconds() - c0, "wall_seconds": time.time() - w0, "n": n}
    fake = np.round(np.clip(fake, 0, 1) * 65535) / 65535  # as an exported 16-bit PNG, like `medgen evaluate`
    fake_labels = np.asarray([names[int(i)] for i in fake_ids], dtype=object) if fake_ids is not None else None

    w0 = time.time()
    recon = _reconstructed(model, real, np.asarray([names.index(c) for c in real_labels]) if conditional else None)
    if recon is not None:
        recon = np.round(recon * 65535) / 65535  # quantised as the generated images are
    domain = _domain_classifier(ds, "train", "val", ds.root / "cache")
    feats, std_info, recon_feats = {"domain": [domain(x) for x in (real, fake, real2)]}, {}, {}
    for name, mask in (("radiomics", "whole"), ("radiomics:foreground", "foreground")):
        radiomics = RadiomicsExtractor(mask=mask)
        images = (real, fake, real2) if recon is None else (real, fake, real2, recon)
        standardised, std_info[name] = standardise(*[radiomics(x) for x in images])
        feats[name] = standardised[:3]
        if recon is not None:
            recon_feats[name] = standardised[3]

    logits_of = _classifier_logits(domain)
    result: dict = {"preset": preset, "profile": profile, "overrides": sets, "run": str(run), "dataset": str(ds.root),
                    "sampling": {"sampler": sampler, "steps": steps, "guidance": guidance, "seed": seed, "n": n},
                    "real": {"test": len(real), "val (second real split)": len(real2)}}
    if conditional and ds.labels:
        result["class_consistency"] = {
            "generated": _consistency(logits_of, fake, fake_labels, ds.labels),
            "real_test": _consistency(logits_of, real, real_labels, ds.labels),
            "classifier": {"what": "the domain extractor's SmallCNN, trained on the real train split (early stopping on val)",
                           "val_accuracy": domain.meta["report"]["accuracy"], "weights": str(domain.weights)},
        }
    if "class_consistency" in result and recon is not None:
        result["class_consistency"]["reconstructed_test"] = _consistency(logits_of, recon, real_labels, ds.labels)
    for name, (f_real, f_fake, f_real2) in feats.items():
        gen, ref = _compare(f_real, f_fake), _compare(f_real, f_real2)
        row = {"generated": gen, "real_vs_real": ref}
        lab_fake = fake_labels if fake_labels is not None else np.zeros(len(fake), dtype=object)
        lab_real = real_labels if fake_labels is not None else np.zeros(len(real), dtype=object)
        row["diversity"] = _diversity(f_fake, lab_fake, f_real, lab_real)
        if name.startswith("radiomics"):
            row.update(frd=gen["fd"], frd_ci95=_frd_interval(f_real, f_fake), frd_real_vs_real=ref["fd"],
                       frd_real_vs_real_ci95=_frd_interval(f_real, f_real2), frd_ratio=gen["fd"] / ref["fd"],
                       standardisation=std_info[name])
            if name in recon_feats:  # the ceiling of a model that reconstructs (see the module's docstring)
                frd_recon = float(fid_from_features(f_real, recon_feats[name]))
                row["reconstructed_test"] = {"frd": frd_recon, "frd_ci95": _frd_interval(f_real, recon_feats[name]),
                                             "frd_ratio": frd_recon / ref["fd"]}
        result[name] = row
    times["metrics"] = {"wall_seconds": time.time() - w0}
    result["time"] = times

    checks = {}
    if "class_consistency" in result:
        checks["class_consistency (min per class)"] = result["class_consistency"]["generated"]["min_per_class"] >= TARGETS["class_consistency"]
    for name in feats:
        checks[f"recall/{name}"] = result[name]["generated"]["recall"] >= TARGETS["recall"]
        checks[f"coverage/{name}"] = result[name]["generated"]["coverage"] >= TARGETS["coverage"]
        ratio = result[name]["diversity"]["min_ratio"]
        checks[f"diversity/{name} (min per class)"] = ratio is not None and ratio >= TARGETS["diversity_ratio"]
    for name in ("radiomics", "radiomics:foreground"):
        checks[f"frd_ratio/{name}"] = result[name]["frd_ratio"] <= TARGETS["frd_ratio"]
    result["targets"] = {"thresholds": TARGETS, "met": checks}
    result["machine"] = machine()
    print(json.dumps({"bench": "sample_quality", **result}), flush=True)


if __name__ == "__main__":
    main()
