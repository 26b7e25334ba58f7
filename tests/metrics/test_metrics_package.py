"""medgen.metrics re-exports its functions and imports no heavy dependency at import time."""
from __future__ import annotations

import subprocess
import sys

import medgen.metrics
from medgen.metrics.frechet import frechet_distance


def test_public_functions_are_reexported():
    assert medgen.metrics.frechet_distance is frechet_distance
    for name in medgen.metrics.__all__:
        assert callable(getattr(medgen.metrics, name)) or name == "MS_SSIM_WEIGHTS", name


def test_import_is_lazy():
    code = (
        "import sys, medgen.metrics; "
        "print(sorted(m for m in ('torch', 'monai', 'sklearn', 'scipy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
