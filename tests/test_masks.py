"""Mask sources and their checks, mask-conditioned sampling (2D and 3D), RePaint inpainting and the
image + mask pairs it writes (PNG, NIfTI, DICOM + SEG)."""
import json
import numpy as np
import pytest

from medgen.errors import UserError
from medgen.masks import check_mask, extrude, load_masks, parse_random

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _png(path, arr):
    from PIL import Image

    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("mask,needle", [
    (np.ones((16, 16)), "does not match the model's image size (32, 32)"),
    (np.ones((4, 32, 32)), "mask has 3 dimensions"),
    (np.zeros((32, 32)), "mask is empty"),
    (np.full((32, 32), 3), "mask value 3 is outside the trained classes 0..1"),
])
def test_bad_masks_are_refused_naming_the_file(mask, needle):
    with pytest.raises(UserError, match="m.png") as err:
        check_mask(mask, (32, 32), 1, "m.png")
    assert needle in str(err.value)


def test_binary_8bit_png_masks_read_as_labels(tmp_path):
    m = np.zeros((32, 32), np.uint8)
    m[4:9, 10:20] = 255
    masks = load_masks(str(_png(tmp_path / "a.png", m)), (32, 32), 1)
    assert masks.masks.shape == (1, 1, 32, 32) and set(np.unique(masks.masks)) == {0, 1} and masks.masks.sum() == 50


def test_random_masks_meet_class_size_and_position():
    s = load_masks("random:glioma,size=1-6,where=left", (32, 32), 1, n=3, seed=1)
    assert s.masks.shape == (3, 1, 32, 32) and s.lesion_class == "glioma"
    for i in range(3):
        rec = s.record(i)
        assert 1 <= rec["mask_area_pct"] <= 6 and rec["mask_source"].startswith("random:glioma")
        cols = np.nonzero(s.masks[i, 0])[1]
        assert cols.mean() < 0.45 * 32  # centroid in the left part
    again = load_masks("random:glioma,size=1-6,where=left", (32, 32), 1, n=3, seed=1)
    assert np.array_equal(s.masks, again.masks)  # deterministic from the seed


@pytest.mark.parametrize("spec,needle", [
    ("random:", "needs a class"), ("random:cat", "needs a class"), ("random:glioma,size=5", "size=LO-HI"),
    ("random:glioma,size=9-3", "LO < HI"), ("random:glioma,where=inside", "where= is one of"),
    ("random:glioma,colour=red", "unknown option 'colour'"),
])
def test_bad_random_specs(spec, needle):
    with pytest.raises(UserError, match=needle):
        parse_random(spec)


def test_impossible_random_constraint_says_so(monkeypatch):
    import medgen.masks

    monkeypatch.setattr(medgen.masks, "MAX_TRIES", 3)
    with pytest.raises(UserError, match="widen size"):
        load_masks("random:pituitary,size=90-100", (32, 32), 1, n=1)


def test_extruded_volume_masks_shrink_towards_their_ends():
    m2 = np.zeros((32, 32), np.uint8)
    m2[8:24, 8:24] = 1
    vol = extrude(m2, 9, np.random.default_rng(0))
    areas = vol.reshape(9, -1).sum(1).astype(int)
    top = int(np.argmax(areas))
    assert areas[top] > 0 and all(np.diff(areas[: top + 1]) >= 0) and all(np.diff(areas[top:]) <= 0)
    assert not (vol.astype(bool) & ~m2.astype(bool)[None]).any()  # never outside the outline


def test_mask_conditioned_pairs_png_and_dicom_seg(mask_run, tmp_path):
    import highdicom as hd
    import pydicom
    from PIL import Image

    from medgen.mask_sampling import sample_pairs

    res = sample_pairs(mask_run, "random:meningioma,size=2-10", n=2, steps=3, out=tmp_path / "p", echo=lambda *a: None)
    man = json.loads((tmp_path / "p/samples.json").read_text())
    assert man["mode"] == "mask-conditioned" and man["mask_source"] == "random:meningioma,size=2-10"
    assert man["label"] == "meningioma"  # a random:CLASS source picks the class on a class-conditional run
    for i, f in enumerate(man["files"]):
        assert f["lesion_class"] == "meningioma" and f["seed"] == 0 and 2 <= f["mask_area_pct"] <= 10
        saved = np.asarray(Image.open(tmp_path / "p" / f["mask"]))
        assert np.array_equal(saved, res["masks"][i, 0])
    assert (tmp_path / "p/pairs.png").exists()

    sample_pairs(mask_run, "random:glioma", n=1, steps=2, fmt="dcm", out=tmp_path / "d", echo=lambda *a: None)
    image = pydicom.dcmread(next((tmp_path / "d").glob("*[0-9]_glioma.dcm")))
    seg = hd.seg.segread(next((tmp_path / "d").glob("*_seg.dcm")))
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert ref == image.SOPInstanceUID and seg.StudyInstanceUID == image.StudyInstanceUID
    assert "SYNTHETIC" in seg.ImageComments and "SYNTHETIC" in image.ImageComments
    assert str(seg.PatientID) == "SYNTHETIC" and not str(seg.PatientBirthDate)
    man = json.loads((tmp_path / "d/samples.json").read_text())
    assert int(seg.pixel_array.sum()) == man["files"][0]["mask_area_px"]


def test_dataset_masks_keep_their_class(mask_run, tmp_path):
    from medgen.mask_sampling import sample_pairs

    sample_pairs(mask_run, "dataset:train", n=3, steps=2, out=tmp_path / "s", echo=lambda *a: None)
    files = json.loads((tmp_path / "s/samples.json").read_text())["files"]
    assert [f["label"] for f in files] == [f["mask_label"] for f in files] and "none" not in {f["label"] for f in files}


def test_inpainting_keeps_every_pixel_outside_the_mask(mask_run, mask_lesions, tmp_path):
    from PIL import Image

    from medgen.mask_sampling import sample_pairs

    images = np.load(mask_lesions / "images.npy")[:2]
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for i, im in enumerate(images):
        Image.fromarray(np.round(im[0] * 65535).astype(np.uint16)).save(tmp_path / f"img/s{i}.png")
        m = np.zeros((32, 32), np.uint8)
        m[10:20, 12:22] = 255
        _png(tmp_path / f"msk/s{i}_mask.png", m)
    sample_pairs(mask_run, str(tmp_path / "msk"), inpaint=str(tmp_path / "img"), steps=3, resample=2, out=tmp_path / "o",
                 echo=lambda *a: None)
    man = json.loads((tmp_path / "o/samples.json").read_text())
    assert man["mode"] == "inpaint" and [f["original"] for f in man["files"]] == ["s0.png", "s1.png"]
    for i, f in enumerate(man["files"]):
        before = np.asarray(Image.open(tmp_path / f"img/s{i}.png")).astype(int)
        after = np.asarray(Image.open(tmp_path / "o" / f["file"])).astype(int)
        inside = np.asarray(Image.open(tmp_path / "o" / f["mask"])) > 0
        assert np.array_equal(before[~inside], after[~inside])  # the output's own quantisation: exact
        assert np.abs(before - after)[inside].mean() > 100  # and the mask was redrawn


def test_inpainting_a_latent_run_blends_in_image_space(tmp_path):
    """A latent model's decoder changes every pixel; the blend must restore all outside the mask."""
    import torch

    from medgen.inpaint import repaint, seam_weights
    from medgen.models.base import DataInfo, build_model
    from medgen.config import resolve

    cfg = resolve("mammo-roi-ldm", profile="tiny", overrides=["data.prepare.size=[32,32]"])
    model = build_model(cfg, DataInfo(2, 1, (32, 32), ["a", "b"])).eval()
    x = torch.rand(1, 1, 32, 32)
    m = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    m[..., 8:20, 8:20] = 1
    out = repaint(model, x, m, steps=2, resample=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[m == 0], x[m == 0]) and not torch.allclose(out[m == 1], x[m == 1])
    w = seam_weights(m.numpy(), 2.0)[0, 0]
    assert w[8, 14] == 0.5 and w[14, 14] == 1.0 and w[7, 14] == 0  # the seam ramps inside the mask only


def test_bad_pairs_input_exits_2_and_writes_nothing(mask_run, tmp_path, capsys):
    from medgen.cli import main

    bad = _png(tmp_path / "small.png", np.ones((16, 16)) * 255)
    (tmp_path / "img").mkdir()
    _png(tmp_path / "img/a.png", np.ones((32, 32)) * 100)
    (tmp_path / "msk").mkdir()
    _png(tmp_path / "msk/b.png", np.ones((32, 32)))
    _png(tmp_path / "msk/c.png", np.ones((32, 32)))
    cases = [(["--masks", bad], "small.png: mask size (16, 16) does not match"),
             (["--inpaint", tmp_path / "img"], "needs a mask"),
             (["--inpaint", tmp_path / "img", "--masks", tmp_path / "msk"], "a.png has no mask in")]
    for args, needle in cases:
        with pytest.raises(SystemExit) as exit_:
            main(["sample", str(mask_run), "--out", str(tmp_path / "o"), *map(str, args)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


def test_mask_run_without_masks_says_how(mask_run):
    from medgen.sampling import sample

    with pytest.raises(UserError, match="--masks SOURCE"):
        sample(mask_run, n=1, steps=2, echo=lambda *a: None)


def test_3d_mask_conditioned_run_writes_nifti_pairs(tmp_path):
    import nibabel as nib

    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.mask_sampling import sample_pairs
    from medgen.training import train

    rng = np.random.default_rng(0)
    rows = ["path,label,mask"]
    for i in range(8):
        vol = rng.random((16, 16, 4)).astype(np.float32)
        m = np.zeros((16, 16, 4), np.uint8)
        m[4:10, 5:11, 1:3] = 1
        vol[m > 0] += 1.0
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / f"v{i}.nii.gz"))
        nib.save(nib.Nifti1Image(m, np.eye(4)), str(tmp_path / f"m{i}.nii.gz"))
        rows.append(f"v{i}.nii.gz,lesion,m{i}.nii.gz")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    prepare(f"csv:{tmp_path / 'pairs.csv'}", tmp_path / "d", PrepareOptions(size=(4, 16, 16), workers=1))
    train("lesion-mask-ddpm-3d", tmp_path / "d", tmp_path / "r", profile="tiny", echo=lambda *a: None)
    res = sample_pairs(tmp_path / "r", "random:glioma,size=1-30", n=2, steps=2, echo=lambda *a: None)
    assert res["images"].shape == (2, 1, 4, 16, 16) and res["masks"].shape == (2, 1, 4, 16, 16)
    masks = sorted((tmp_path / "r/samples").glob("*/*_mask.nii.gz"))
    assert len(masks) == 2 and nib.load(str(masks[0])).shape == (16, 16, 4)
    assert np.asarray(nib.load(str(masks[0])).dataobj).dtype == np.uint8


def test_seg_utility_table_and_adherence_from_a_pairs_folder(mask_run, mask_lesions, tmp_path):
    from medgen.evaluation.seg_utility import SegSettings, run_seg_utility, table_lines
    from medgen.mask_sampling import sample_pairs

    sample_pairs(mask_run, "dataset:train", n=6, steps=2, out=tmp_path / "pairs", echo=lambda *a: None)
    res = run_seg_utility(mask_run, tmp_path / "pairs", seeds=2, settings=SegSettings(steps=3, batch_size=4, channels=(4, 8)),
                          echo=lambda *a: None)
    names = [r["train"] for r in res["rows"]]
    assert names == ["real", "real+synthetic", "synthetic"] and res["n_synthetic"] == 6 and res["k_pairs"] == []
    for r in res["rows"]:
        assert r["dice"]["method"] == "t over seeds" and r["dice"]["n"] == 2 and len(r["dice_per_seed"]) == 2
        assert r["dice"]["low"] <= r["dice"]["value"] <= r["dice"]["high"] and 0 <= r["dice"]["value"] <= 1
    assert {"dice_conditioning", "dice_shuffled"} <= set(res["adherence"]) and json.loads(open(res["output"]).read())["rows"]
    assert res["synthetic"]["generator"] == str(mask_run) and res["synthetic"]["generator_saw"]  # what the generator saw
    assert table_lines(res)[2].startswith("| real | ")


def test_segmentation_scores_match_known_overlaps():
    from medgen.evaluation.seg_utility import interval_over_seeds, scores

    truth = np.zeros((3, 1, 20, 20), np.uint8)
    truth[:, :, 5:10, 5:10] = 1
    pred = truth.copy()
    pred[1, :, 5:10, 5:15] = 1  # twice the area: Dice 2*25/(25+50)
    pred[2] = 0  # nothing found: Dice 0, HD95 = the image diagonal
    sc = scores(pred, truth)
    assert np.allclose(sc["dice"], [1.0, 2 / 3, 0.0])
    assert sc["hd95"][0] == 0 and 0 < sc["hd95"][1] <= 5 and np.isclose(sc["hd95"][2], np.sqrt(800))
    iv = interval_over_seeds([0.5, 0.6, 0.7])
    assert np.isclose(iv["value"], 0.6) and iv["low"] < 0.6 < iv["high"] and iv["n"] == 3
    assert interval_over_seeds([0.0, 0.05, 0.9], bounds=(0.0, 1.0))["low"] == 0.0  # unclipped it is below 0


def test_pairs_never_overwrite_without_force(mask_run, tmp_path):
    from medgen.mask_sampling import sample_pairs

    sample_pairs(mask_run, "random:glioma", n=1, steps=2, out=tmp_path / "o", echo=lambda *a: None)
    with pytest.raises(UserError, match="already exists"):
        sample_pairs(mask_run, "random:pituitary", n=1, steps=2, out=tmp_path / "o", echo=lambda *a: None)
    assert json.loads((tmp_path / "o/samples.json").read_text())["mask_source"] == "random:glioma"
    sample_pairs(mask_run, "random:pituitary", n=1, steps=2, out=tmp_path / "o", force=True, echo=lambda *a: None)
    assert json.loads((tmp_path / "o/samples.json").read_text())["mask_source"] == "random:pituitary"


def test_inpainting_with_random_masks_draws_one_per_image(mask_run, mask_lesions, tmp_path):
    from PIL import Image

    from medgen.mask_sampling import sample_pairs

    (tmp_path / "img").mkdir()
    for i, im in enumerate(np.load(mask_lesions / "images.npy")[:2]):
        Image.fromarray(np.round(im[0] * 65535).astype(np.uint16)).save(tmp_path / f"img/s{i}.png")
    res = sample_pairs(mask_run, "random:glioma", inpaint=str(tmp_path / "img"), steps=2, resample=1, out=tmp_path / "o",
                       echo=lambda *a: None)
    files = json.loads((tmp_path / "o/samples.json").read_text())["files"]
    assert len(files) == 2 and files[0]["mask_from"] != files[1]["mask_from"]
    assert not np.array_equal(res["masks"][0], res["masks"][1])
