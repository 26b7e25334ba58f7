"""Per-image scoring variants on cached raw maps (cache_maps.py): plain, minus the mean normal map,
and a per-position z-score against the normal validation maps (leave-one-out for the validation
images, whose 95th percentile is the threshold); image AUROC, pixel AUROC and best Dice in the
foreground, held-out FPR. Exploratory: every variant is shown with its TEST numbers, so it
chooses nothing (the shipped choice is medgen.anomaly.tuning, on normals only).

    PYTHONPATH=src python bench/anomaly_variants/score_variants.py OUT.npz
"""
import sys, numpy as np
from sklearn.metrics import roc_auc_score
from scipy import ndimage as ndi
from medgen.anomaly import scoring
from medgen.anomaly.evaluation import best_dice

c = dict(np.load(sys.argv[1], allow_pickle=True))
names = sorted({k[:-4] for k in c if k.endswith("_raw") and k != "val_raw"})

def zstats(vm, fg, sig, floor):
    mu = vm.mean(0); sd = vm.std(0)
    if sig: mu = ndi.gaussian_filter(mu, (0, sig, sig)); sd = ndi.gaussian_filter(sd, (0, sig, sig))
    return mu, sd

def prep(raw, x, smooth, fg_thr=0.05):
    return scoring.postprocess(raw, x, smooth, fg_thr)

def variant(smooth, norm, how, tp, sig=0, floor=0.5, post=0):
    vm, vfg = prep(c["val_raw"], c["val_x"], smooth)
    n = len(vm)
    out = {}
    # leave-one-out normalisation for the val scores
    def normalise(m, fg, mu, sd):
        if norm == "none": return m
        if norm == "mean": z = m - mu
        else: z = (m - mu) / (sd + floor * sd[fg.any(0)].mean() if True else sd)
        if post: z = ndi.gaussian_filter(z, (0, 0, post, post))
        return np.where(fg, z, z.min() if z.size else 0).astype(np.float32) if False else np.where(fg, z, 0).astype(np.float32)
    vs = []
    for i in range(n):
        others = np.delete(vm, i, 0)
        mu, sd = zstats(others, vfg, sig, floor)
        zi = normalise(vm[i:i+1], vfg[i:i+1], mu, sd)
        vs.append(scoring.image_scores(zi, how, tp, vfg[i:i+1])[0])
    mu, sd = zstats(vm, vfg, sig, floor)
    thr = np.quantile(vs, 0.95)
    for nm in names:
        m, fg = prep(c[nm + "_raw"], c[nm + "_x"], smooth)
        z = normalise(m, fg, mu, sd)
        s = scoring.image_scores(z, how, tp, fg)
        mask = c[nm + "_mask"]; lab = mask.reshape(len(mask), -1).any(1)
        au = roc_auc_score(lab, s)
        fpr = (s[~lab] > thr).mean()
        # pixel: foreground pixels
        sel = fg
        d, _ = best_dice(z[sel], mask[sel])
        pa = roc_auc_score(mask[sel], z[sel])
        out[nm] = (au, pa, d, fpr)
    return out

cfgs = [dict(smooth=3, norm="none", how="top-percentile", tp=5)]
for smooth in (1, 2, 3):
    for norm, floor, sig in (("none", 0, 0), ("mean", 0, 0), ("z", 0.1, 0), ("z", 0.5, 0), ("z", 1.0, 0), ("z", 0.5, 2), ("z", 0.2, 2)):
        for how, tp in (("max", 1), ("top-percentile", 1), ("top-percentile", 5)):
            cfgs.append(dict(smooth=smooth, norm=norm, how=how, tp=tp, sig=sig, floor=floor))
for cfg in cfgs:
    r = variant(**cfg)
    print(" ".join(f"{k}={v}" for k, v in cfg.items()).ljust(62), "  ".join(f"{nm[:16]}: img {a:.3f} pix {p:.3f} dice {d:.3f} fpr {f:.2f}" for nm, (a, p, d, f) in r.items()), flush=True)
