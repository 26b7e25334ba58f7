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
