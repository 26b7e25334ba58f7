"""Docs stay true to the code: the CLI reference is generated from it, and the README's promises hold."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current(tmp_path):
    out = tmp_path / "cli.md"
    subprocess.run([sys.executable, "-m", "typer", "medgen.cli", "utils", "docs", "--name", "medgen", "--output", str(out)],
                   check=True, capture_output=True, timeout=120)
    assert out.read_text() == (ROOT / "docs" / "cli.md").read_text(), "docs/cli.md is stale: run `make docs`"


def test_preset_pages_are_current(tmp_path):
    from medgen.preset_docs import render_all

    pages = render_all()
    stale = [name for name, text in pages.items()
             if not (ROOT / "docs" / "presets" / name).exists() or (ROOT / "docs" / "presets" / name).read_text() != text]
    assert not stale, f"docs/presets is stale for {stale}: run `make docs`"
    extra = sorted(p.name for p in (ROOT / "docs" / "presets").glob("*.md") if p.name not in pages)
    assert not extra, f"docs/presets has pages for presets that no longer exist: {extra}"


def test_preset_page_lists_what_the_profiles_change():
    from medgen.preset_docs import preset_page, profile_table

    profiles, rows = profile_table("brain-ae-anomaly")
    assert profiles[:3] == ["paper", "small", "tiny"]
    sizes = dict(rows)["data.prepare.size"]
    assert sizes == [[128, 128], [64, 64], [32, 32]]  # the preset's own values, resolved per profile
    page = preset_page("brain-ae-anomaly")
    assert "| `data.prepare.size` | `[128, 128]` | `[64, 64]` | `[32, 32]` |" in page
    assert "medgen detect runs/brain-ae-anomaly" in page and "S003" in page


def test_readme_shows_the_two_commands_first():
    text = (ROOT / "README.md").read_text()
    first_block = text[text.index("```"):]
    first_block = first_block[: first_block.index("```", 3)]
    assert "make demo" in first_block and "make test" in first_block


def test_every_preset_is_documented_in_the_readme():
    from medgen.config import preset_names

    text = (ROOT / "README.md").read_text()
    missing = [p for p in preset_names() if f"`{p}`" not in text]
    assert not missing, f"presets missing from the README table: {missing}"
