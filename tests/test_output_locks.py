"""One writer per output folder: `sample` and `sample --masks` refuse a folder another medgen process
is filling (its lock ``<parent>/.<name>.lock`` held), and leave that process's files alone."""
from __future__ import annotations

import pytest

from medgen.errors import UserError
from medgen.fsio import acquire_lock

QUIET = lambda *a, **k: None  # noqa: E731


def test_a_sample_folder_another_process_is_filling_is_refused(ldm_run, tmp_path):
    from medgen.sampling import sample

    out = tmp_path / "s"
    out.mkdir()
    (out / "sample_00000.png").write_bytes(b"the other process's file")
    with acquire_lock(tmp_path / ".s.lock", "sample folder"):  # what a running `medgen sample --out s` holds
        for force in (False, True):  # --force must not delete the files it is writing either
            with pytest.raises(UserError, match=r"sample folder .*/s is in use by another medgen process"):
                sample(ldm_run, n=2, steps=2, out=out, force=force, echo=QUIET)
    assert (out / "sample_00000.png").read_bytes() == b"the other process's file"
    res = sample(ldm_run, n=2, steps=2, out=out, force=True, echo=QUIET)  # free again
    assert len(res["images"]) == 2 and (out / "samples.json").exists() and not (tmp_path / ".s.lock").exists()


def test_a_mask_sample_folder_another_process_is_filling_is_refused(mask_run, tmp_path):
    from medgen.mask_sampling import sample_pairs

    with acquire_lock(tmp_path / ".p.lock", "sample folder"):
        with pytest.raises(UserError, match="in use by another medgen process"):
            sample_pairs(mask_run, "random:glioma", n=1, steps=2, out=tmp_path / "p", echo=QUIET)
    assert not (tmp_path / "p").exists()
    sample_pairs(mask_run, "random:glioma", n=1, steps=2, out=tmp_path / "p", echo=QUIET)
    assert (tmp_path / "p" / "samples.json").exists()
