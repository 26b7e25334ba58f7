"""One documentation page per preset, generated from its YAML so it can never drift from it.

Each page says which study the preset reproduces, how to run it, what every profile changes
(a table of the resolved values that differ between profiles) and the preset file itself,
whose comments explain the choices. ``make docs`` writes them; a test checks they are current.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medgen.config import PRESET_DIR, load_preset, preset_names, resolve
from medgen.models.registry import family_class
from medgen.validation import flatten

STUDIES = {
    "S000": "S000: latent diffusion for mammography ROIs, with fine-tuning from a large class to a small one",
    "S001": "S001: survey of GANs, VAEs and VAE-GANs in medical imaging",
    "S002": "S002: 3D DDPM for digital breast tomosynthesis augmentation",
    "S003": "S003: brain-MRI anomaly detection with a convolutional autoencoder (VGG16 encoder)",
    "S004": "S004: GANs, WGAN-GP and conditional VAEs judged by how much they help a tumour classifier",
    "demo": "none: the demo `make demo` runs (see the README)",
}
PROFILE_ORDER = ["paper", "small", "tiny"]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value).replace("|", "\\|")
    return f"`{text}`"


def profile_table(name: str) -> tuple[list[str], list[tuple[str, list[Any]]]]:
    """The profiles (paper/small/tiny first) and each resolved key whose value differs between them."""
    preset = load_preset(name)
    profiles = sorted(preset.get("profiles", {}), key=lambda p: (PROFILE_ORDER.index(p) if p in PROFILE_ORDER else 9, p))
    resolved = {p: flatten(resolve(name, p).model_dump(mode="json")) for p in profiles}
    keys = sorted(set().union(*(r.keys() for r in resolved.values())) - {"profile"})
    rows = []
    for key in keys:
        values = [resolved[p].get(key) for p in profiles]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, values))
    return profiles, rows


def run_commands(name: str, profile: str) -> list[str]:
    """The commands that run the preset end to end on its built-in stand-in data."""
    cfg = resolve(name, profile)
    data = cfg.data.builtin or "DATA"
    size = " ".join(str(s) for s in (cfg.data.prepare or {}).get("size", []))
    run = f"runs/{name}"
    lines = []
    if cfg.data.builtin:
        norm = (cfg.data.prepare or {}).get("normalize")
        n, seed = (cfg.data.prepare or {}).get("n"), (cfg.data.prepare or {}).get("seed")
        lines.append(f"medgen data prepare --source builtin:{data} " + (f"--size {size} " if size else "")
                     + (f"--normalize {norm} " if norm else "") + (f"--n {n} " if n else "")
                     + (f"--seed {seed} " if seed is not None else "") + f"--out data/{data}")
    base = load_preset(name).get("base")  # a preset trained on top of another run (--init-from)
    init = ""
    if base:
        base_run = f"runs/{base['preset']}"
        lines.append(f"medgen train {base['preset']} --data data/{data} --out {base_run} --profile {profile}"
                     + "".join(f" --set '{item}'" for item in base.get("set", [])))
        init = f" --init-from {base_run}"
    lines.append(f"medgen train {name} --data data/{data} --out {run} --profile {profile}{init}")
    if "anomaly" in name:
        lines.append(f"medgen detect {run}")
    elif family_class(cfg.model.family).needs_masks:  # generated from label maps, judged by segmentation
        lines += [f"medgen sample {run} --masks dataset:test --n 16", f"medgen evaluate {run} --seg-utility"]
    else:
        lines += [f"medgen sample {run} --n 16", f"medgen evaluate {run}"]
    lines.append(f"medgen report {run}")
    return lines


def preset_page(name: str) -> str:
    preset = load_preset(name)
    study = str(preset.get("study", "-"))
    profiles, rows = profile_table(name)
    default = preset.get("default_profile", "small")
    lines = [
        f"# Preset `{name}`",
        "",
        f"{preset.get('description', '')}",
        "",
        f"**Study reproduced:** {STUDIES.get(study, study)}"
        + (" (summary in the project's PROTOCOLS notes; settings quoted in the YAML comments below)." if study in STUDIES and study != "demo" else "."),
        "",
        f"**Profiles:** {', '.join(f'`{p}`' for p in profiles)} (default `{default}`). "
        "`paper` is the study's settings, `small` a useful CPU run of minutes, `tiny` a smoke test.",
        "",
    ]
    if preset.get("extends"):
        lines += [f"**Extends:** [`{preset['extends']}`]({preset['extends']}.md). The file below holds only what differs "
                  "from it; the table shows the resolved settings.", ""]
    lines += [
        "## Run it",
        "",
        "```bash",
        *run_commands(name, default),
        "```",
        "",
        "`--set key=value` changes any single setting below, e.g. `--set train.epochs=5`.",
        "",
        "## What the profiles change",
        "",
    ]
    if rows:
        lines += ["| setting | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
        lines += [f"| `{key}` | " + " | ".join(_cell(v) for v in values) + " |" for key, values in rows]
    else:
        lines.append("The profiles resolve to the same settings.")
    lines += ["", "## The preset file", "",
              f"`src/medgen/presets/{name}.yaml` (the resolved config of a run is in its `config.yaml`):", "",
              "```yaml", (PRESET_DIR / f"{name}.yaml").read_text().rstrip(), "```", ""]
    return "\n".join(lines)


def index_page() -> str:
    lines = ["# Presets", "", "One page per preset, generated from its YAML by `make docs`.", "",
             "| preset | study | description |", "|---|---|---|"]
    for name in preset_names():
        p = load_preset(name)
        lines.append(f"| [`{name}`]({name}.md) | {p.get('study', '-')} | {str(p.get('description', '')).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def render_all() -> dict[str, str]:
    pages = {f"{name}.md": preset_page(name) for name in preset_names()}
    pages["README.md"] = index_page()
    return pages


def write_all(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in render_all().items():
        (folder / fname).write_text(text)
        written.append(folder / fname)
    return written


if __name__ == "__main__":
    import sys

    for p in write_all(sys.argv[1] if len(sys.argv) > 1 else "docs/presets"):
        print(p)
