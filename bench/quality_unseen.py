"""The conditional generator recipes on brain slices that are NOT in this repository, with the three
slicing orientations as classes: sample quality as a new user with another brain atlas would see it.

The images: the T1-like contrast of ``anomaly_unseen.py`` (synthesised from the grey- and
white-matter probability maps that nilearn bundles, not the T1 template the built-ins use), every
slice of the central part of the brain in each orientation (brain area at least 40 % of the
largest), padded square instead of cropped to the brain, with a smooth bias field and noise, written
as 16-bit PNGs in one sub-folder per orientation. Prepared at 64x64 with a 70/15/15 split, so each
class has about 20 real test slices.

Then, for each family, ``bench_sample_quality.py`` with the preset's small profile and nothing
tuned to these images; ``cvae-transfer`` first trains ``brain-tumor-vae-pretrain`` on the same
images and starts from it (``--init-from``), as S004's transfer recipe does. One JSON per family in
OUT/, and a markdown table of all that are there on stdout.

    PYTHONPATH=src python bench/quality_unseen.py --out /tmp/views-unseen [--families cgan,ddpm]
        [--data-seed 0] [--table]

``--table`` prints the table of the JSONs already in OUT without training anything.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from anomaly_unseen import central_positions, slice_image, volume, write_png

HERE = Path(__file__).resolve().parent
VIEWS = {0: "sagittal", 1: "coronal", 2: "axial"}  # the probability maps' array axes (RAS): x, y, z
CENTRAL = 0.4
# family -> (preset, extra --set overrides); the small profile of each, as the scorecard runs them
FAMILIES = {
    "cgan": ("brain-tumor-cgan", []),
    "cwgan-gp": ("brain-tumor-cwgan-gp", []),
    "cvae": ("brain-tumor-cvae", []),
    "cvae-transfer": ("brain-tumor-cvae-transfer", []),
    "vae-gan": ("vae-gan", ["model.conditional=true"]),
    "ldm": ("brain-tumor-ldm", []),
    "ddpm": ("brain-tumor-ddpm", []),
}


def build(out: Path, seed: int) -> None:
    """One 16-bit PNG per central slice and orientation, in OUT/images/<orientation>/."""
    rng = np.random.default_rng(seed)
    vol = volume()
    for axis, name in VIEWS.items():
        for k in central_positions(vol, axis, CENTRAL):
            write_png(out / "images" / name / f"{name}{k:03d}.png", slice_image(vol, axis, int(k), rng))


def run_family(family: str, data: Path, out: Path) -> Path:
    """``bench_sample_quality.py`` for one family; its JSON (with any pretraining's time) in OUT."""
    preset, sets = FAMILIES[family]
    args = [sys.executable, str(HERE / "bench_sample_quality.py"), preset, f"--data={data}", f"--out={out / family}"]
    args += [f"--set={s}" for s in sets]
    extra = {}
    if family == "cvae-transfer":
        from medgen.training import train

        base = out / "vae-pretrain"
        if not (base / "checkpoints").exists():
            t0 = time.process_time()
            train("brain-tumor-vae-pretrain", data, base, profile="small", force=True, echo=lambda *_: None)
            extra["pretrain_cpu_seconds"] = time.process_time() - t0
        args.append(f"--init-from={base}")
    done = subprocess.run(args, check=True, capture_output=True, text=True, cwd=HERE)
    result = json.loads(done.stdout)
    result.update(extra)
    path = out / f"{family}.json"
    path.write_text(json.dumps(result, indent=1))
    return path


def row(family: str, d: dict) -> str:
    g = d["class_consistency"]["generated"]
    worst = min(g["per_class"].items(), key=lambda kv: kv[1]["value"])

    def rc(key: str) -> str:
        x = d[key]["generated"]
        return f"{x['recall']:.2f} / {x['coverage']:.2f}"

    train = d.get("time", {}).get("train", {}).get("cpu_seconds", 0) + d.get("pretrain_cpu_seconds", 0)
    rad = d["radiomics"]
    return (f"| {family} (`{d['preset']}`{', ' + ', '.join(d['overrides']) if d['overrides'] else ''}) | {train:,.0f} | "
            f"{g['value']:.2f} [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}] ({worst[0]} {worst[1]['value']:.2f}) | "
            f"{rc('domain')} | {rc('radiomics')} | {rad['frd_ratio']:.3g}x | {d['domain']['diversity']['min_ratio']:.2f} |")


def table(out: Path) -> str:
    lines = ["| family (preset) | train CPU s | class consistency [95 % CI] (weakest class) | domain R / C | "
             "radiomics R / C | FRD whole (x real) | diversity (domain) |", "|---|---|---|---|---|---|---|"]
    for family in FAMILIES:
        if (out / f"{family}.json").exists():
            lines.append(row(family, json.loads((out / f"{family}.json").read_text())))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, of: " + ", ".join(FAMILIES))
    ap.add_argument("--data-seed", type=int, default=0, help="another seed draws other bias fields and noise")
    ap.add_argument("--table", action="store_true", help="only print the table of the results in OUT")
    a = ap.parse_args()
    unknown = set(a.families.split(",")) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown families: {', '.join(sorted(unknown))} (known: {', '.join(FAMILIES)})")
    if not a.table:
        from medgen.data.prepare import PrepareOptions, prepare
        from medgen.progress import set_quiet

        set_quiet(True)
        if not (a.out / "images").exists():
            build(a.out, a.data_seed)
        data = a.out / "data"
        if not (data / "index.csv").exists():
            prepare(f"folder:{a.out / 'images'}", data, PrepareOptions(size=(64, 64), split=(0.7, 0.15, 0.15), workers=1))
        for family in a.families.split(","):
            if not (a.out / f"{family}.json").exists():
                print(f"{family}: {run_family(family, data, a.out)}", flush=True)
    print(table(a.out))


if __name__ == "__main__":
    main()
