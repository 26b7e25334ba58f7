"""The report is self-contained and renders in a real browser with no broken images."""
import base64
import re
import shutil
import subprocess

import pytest

from medgen.report import write_report
from medgen.sampling import sample


@pytest.fixture(scope="module")
def report(ldm_run):
    sample(ldm_run, n=3, steps=3, out=ldm_run / "samples" / "report-test", force=True, echo=lambda *a: None)
    return write_report(ldm_run)


def test_report_is_self_contained(report):
    page = report.read_text()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page), "the report must not load anything from outside"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 4  # preview, curves, sample grid, histogram
    for img in images:
        assert base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n"
    for section in ("Data", "Training curves", "Samples", "Resolved configuration"):
        assert f"<h2>{section}</h2>" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (CI installs it: apt-get install chromium)")
def test_report_renders_in_chromium(report, tmp_path):
    from PIL import Image

    # count images that failed to decode and expose the number through the page title
    probe = report.read_text().replace("</body>", "<script>window.addEventListener('load', () => { const bad = [...document.images]"
                                       ".filter(i => !i.complete || i.naturalWidth === 0).length; document.title = 'broken:' + bad + "
                                       "' images:' + document.images.length; });</script></body>")
    page = tmp_path / "probe.html"
    page.write_text(probe)
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    match = re.search(r"<title>broken:(\d+) images:(\d+)</title>", dom)
    assert match, dom[:500]
    assert int(match.group(1)) == 0 and int(match.group(2)) >= 4
    shot = tmp_path / "shot.png"
    subprocess.run([*common, "--window-size=1366,900", f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    img = Image.open(shot).convert("L")
    assert img.size == (1366, 900)
    lo, hi = img.getextrema()
    assert hi - lo > 100  # rendered content, not a blank page


def test_headline_numbers_come_first_with_their_meaning():
    """Evaluation and anomaly blocks open with a small table of the numbers people look for, each
    explained; the full nested values are folded below it."""
    from medgen.report.html import key_table

    ev = {"summary": {"fid/domain": 2.19, "precision/domain": 0.75, "memorisation/pixels/fraction_flagged": 0.0},
          "utility": {"rows": {"real": {"mean": dict.fromkeys(("accuracy", "f1_macro", "precision_macro", "recall_macro"), 0.9),
                                        "std": dict.fromkeys(("accuracy", "f1_macro", "precision_macro", "recall_macro"), 0.01)}}}}
    html_ev = key_table("evaluation", ev)
    assert "<th>fid/domain</th><td>2.19</td>" in html_ev and "lower = closer" in html_ev
    assert "baseline 0.05" in html_ev and "<th>real</th><td>0.900 ± 0.010</td>" in html_ev
    an = {"image": {"auroc": 0.856, "auprc": 0.95, "fpr_at_threshold": 0.1}, "pixel": {"auroc": 0.97, "dice_best": 0.52,
          "dice_at_threshold": 0.41}, "pixel_foreground": {"auroc": 0.94}, "threshold": {"target_fpr": 0.05}}
    html_an = key_table("anomaly", an)
    assert "<th>image AUROC</th><td>0.856</td>" in html_an and "0.97 / 0.94" in html_an
    assert key_table("something-else", {"a": 1}) == ""


def test_report_folds_the_full_values_under_the_headline_table(report):
    page = report.read_text()
    assert "<details><summary>All values</summary>" in page
    assert "optimiser steps in all stages" in page  # the training block's headline table
