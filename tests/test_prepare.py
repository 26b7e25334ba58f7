import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import write_dicom
from medgen.data.dataset import PreparedDataset
from medgen.data.prepare import PrepareOptions, prepare
from medgen.data.sources import SourceOptions
from medgen.errors import UserError


def _opts(**kw):
    src = kw.pop("source", SourceOptions())
    return PrepareOptions(workers=1, source=src, **kw)


def test_png_class_folders(tmp_path, png_classes):
    out = tmp_path / "ds"
    s = prepare(f"folder:{png_classes}", out, _opts(size=(32, 32), normalize="train-max"))
    ds = PreparedDataset(out)
    assert s.n_items == 13 and ds.images.shape == (13, 1, 32, 32)
    assert set(ds.labels) == {"normal", "tumor"}
    rejected = pd.read_csv(out / "rejected.csv")
    assert rejected["source"].str.endswith("notes.txt").any()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["normalize"]["mode"] == "train-max" and 60000 < stats["normalize"]["max"] <= 65535  # after resizing, as S000
    train = ds.select(split="train")
    assert np.asarray(ds.images[train]).max() == pytest.approx(1.0)
    assert set(ds.index.columns) >= {"id", "source", "label", "split", "roi", "mask"}
    assert (out / "preview.png").stat().st_size > 1000


def test_existing_output_needs_force(tmp_path, png_classes):
    out = tmp_path / "ds"
    prepare(f"folder:{png_classes}", out, _opts(size=(16, 16)))
    with pytest.raises(UserError, match="--force"):
        prepare(f"folder:{png_classes}", out, _opts(size=(16, 16)))
    prepare(f"folder:{png_classes}", out, _opts(size=(24, 24)), force=True)
    assert PreparedDataset(out).size == (24, 24)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temp folder left behind


def test_dicom_ct_series_slices_and_volume(tmp_path, ct_series):
    out = tmp_path / "ct2d"
    prepare(f"dicom:{ct_series}", out, _opts(size=(32, 32), normalize="window:40,400"))
    ds = PreparedDataset(out)
    assert len(ds) == 12 and ds.labels == ["ct"]
    # sorted by slice position: the tissue value (40+k HU) increases with the slice index
    centres = [float(np.asarray(ds.images[i])[0, 16, 16]) for i in range(12)]
    order = np.argsort(ds.index["id"].to_numpy())
    assert np.all(np.diff(np.array(centres)[order]) > 0)
    assert centres[0] == pytest.approx((40 - (40 - 200)) / 400, abs=0.02)
    out3 = tmp_path / "ct3d"
    prepare(f"dicom:{ct_series}", out3, _opts(size=(8, 16, 16), normalize="none"))
    ds3 = PreparedDataset(out3)
    assert ds3.images.shape == (1, 1, 8, 16, 16) and ds3.spatial_dims == 3
    assert np.asarray(ds3.images).min() == pytest.approx(-1000, abs=1)


def _embed_manifest(tmp_path):
    rng = np.random.default_rng(1)
    imgs = tmp_path / "embed"
    imgs.mkdir()
    for i in range(4):
        write_dicom(imgs / f"mg{i}.dcm", (rng.random((120, 100)) * 4000).astype(np.uint16), modality="MG")
    Image.fromarray((rng.random((120, 100)) * 255).astype(np.uint8)).save(imgs / "png0.png")
    (imgs / "corrupt.dcm").write_bytes(b"\0" * 50)
    rows = [
        ("embed/mg0.dcm", "0", "[[[10, 10, 50, 60]]]"),
        ("embed/mg1.dcm", "0", "((20, 20, 60, 70), (70, 10, 110, 40))"),  # two boxes -> two items
        ("embed/mg2.dcm", "beta", "[[5, 5, 45, 45]]"),
        ("embed/mg3.dcm", "beta", "[[100, 80, 130, 120]]"),  # partly outside: 33% inside -> rejected
        ("embed/png0.png", "0", "[[0, 0, 40, 40]]"),
        ("embed/missing.dcm", "0", "[[0, 0, 10, 10]]"),
        ("embed/corrupt.dcm", "0", "[[0, 0, 10, 10]]"),
        ("embed/mg0.dcm", "beta", "[[300, 300, 400, 400]]"),  # outside
        ("embed/mg1.dcm", "0", "[[50, 50, 20, 60]]"),  # inverted
        ("embed/mg2.dcm", "0", "[[30, 30, 30, 60]]"),  # empty
        ("embed/mg3.dcm", "0", ""),  # no box
    ]
    pd.DataFrame(rows, columns=["anon_dicom_path", "class", "ROI_coords"]).to_csv(tmp_path / "meta.csv", index=False)
    return tmp_path / "meta.csv"


def test_embed_manifest_rois_and_every_bad_row_rejected(tmp_path):
    manifest = _embed_manifest(tmp_path)
    out = tmp_path / "roi"
    src = SourceOptions(path_column="anon_dicom_path", label_column="class", roi_column="ROI_coords")
    s = prepare(f"csv:{manifest}", out, _opts(size=(32, 32), normalize="train-max", source=src))
    ds = PreparedDataset(out)
    assert s.n_items == 5  # mg0, mg1 x2, mg2, png0
    assert sorted(ds.index["roi"]) == sorted(["[10, 10, 50, 60]", "[20, 20, 60, 70]", "[70, 10, 110, 40]", "[5, 5, 45, 45]", "[0, 0, 40, 40]"])
    rej = pd.read_csv(out / "rejected.csv")
    reasons = " | ".join(rej["reason"])
    for expected in ("outside the image", "file not found", "inverted", "empty ROI box", "no ROI box", "no DICOM pixel data"):
        assert expected in reasons, expected
    assert len(rej) == 7
    # the two ROIs of one image stay in one split
    mg1 = ds.index[ds.index["source"].str.endswith("mg1.dcm")]
    assert mg1["split"].nunique() == 1


def test_nifti_volumes_to_slices_and_subvolumes(tmp_path):
    root = tmp_path / "nii"
    (root / "patients").mkdir(parents=True)
    for i in range(3):
        vol = np.zeros((20, 24, 10), np.float32)
        vol[4:16, 4:20, 2:8] = 100 + i
        nib.save(nib.Nifti1Image(vol, np.diag([1, 1, 2, 1])), root / "patients" / f"p{i}.nii.gz")
    out = tmp_path / "sl"
    prepare(f"nifti:{root}", out, _opts(size=(16, 16)))
    ds = PreparedDataset(out)
    assert len(ds) == 18  # 6 non-empty slices x 3 volumes; empty slices listed as skipped
    assert ds.index.groupby("group")["split"].nunique().max() == 1
    rej = pd.read_csv(out / "rejected.csv")
    assert len(rej) == 3 and rej["reason"].str.contains("4 of 10 slices skipped").all()
    out3 = tmp_path / "vol"
    prepare(f"nifti:{root}", out3, _opts(size=(8, 16, 16)))
    assert PreparedDataset(out3).images.shape == (3, 1, 8, 16, 16)


def test_nifti_volume_sliced_in_three_orientations_gives_view_classes(tmp_path):
    """--orientations axial,coronal,sagittal: one atlas volume -> three view classes; the 2 mm slices
    of the coronal and sagittal planes resampled to square pixels, shown superior-up."""
    root = tmp_path / "in"
    root.mkdir()
    vol = np.zeros((20, 24, 10), np.float32)  # (x, y, z), voxels 1 x 1 x 2 mm
    vol[4:16, 4:20, 2:8] = 100
    vol[4:16, 4:20, 7] = 200  # the box's most superior slab is brighter
    nib.save(nib.Nifti1Image(vol, np.diag([1, 1, 2, 1])), root / "atlas.nii.gz")
    np.save(root / "stack.npy", np.ones((6, 12, 12), np.float32))  # a volume without orientation or voxel size
    out = tmp_path / "views"
    prepare(f"folder:{root}", out, _opts(size=(16, 16), orientations=("axial", "coronal", "sagittal")))
    ds = PreparedDataset(out)
    labels = ds.index["label"].value_counts().to_dict()
    assert labels == {"coronal": 16, "sagittal": 12, "axial": 6}  # the non-empty slices of each plane
    assert ds.index.loc[ds.index["label"] == "coronal", "id"].str.contains("_y").all()
    assert ds.index.loc[ds.index["label"] == "sagittal", "source"].str.contains("#x=").all()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["orientations"] == ["axial", "coronal", "sagittal"] and stats["labels"] == ["axial", "coronal", "sagittal"]
    # the box is 12 mm high (6 slices of 2 mm), 12 mm wide in x and 16 mm in y: without the
    # resampling to square pixels its height would be halved (ratios 0.5 and 0.375)
    for view, ratio in (("coronal", 12 / 12), ("sagittal", 12 / 16)):
        img = ds.images[int(np.flatnonzero(ds.index["label"].to_numpy() == view)[0])][0]
        rows, cols = np.flatnonzero(img.max(1) > 0.1), np.flatnonzero(img.max(0) > 0.1)
        assert abs(len(rows) / len(cols) - ratio) < 0.2, (view, len(rows), len(cols))
        brightest = rows[int(np.argmax(img[rows].mean(1)))]
        assert brightest < rows.mean(), (view, brightest, rows)  # the superior slab in the top half
    rej = pd.read_csv(out / "rejected.csv")
    reasons = dict(zip(rej["source"].map(lambda s: s.rsplit("/", 1)[-1]), rej["reason"]))
    assert "need a NIfTI volume" in reasons["stack.npy"]
    assert rej["reason"].str.contains("8 of 24 coronal slices skipped").any()
    with pytest.raises(UserError, match="bad orientations oblique"):
        prepare(f"folder:{root}", tmp_path / "x", _opts(size=(16, 16), orientations=("axial", "oblique")))
    with pytest.raises(UserError, match="need a 2D --size"):
        prepare(f"folder:{root}", tmp_path / "y", _opts(size=(8, 16, 16), orientations=("coronal",)))


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"nope")
    with pytest.raises(UserError, match="no usable images"):
        prepare(f"folder:{tmp_path / 'in'}", tmp_path / "out", _opts(size=(8, 8)))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("normalize", ["minmax", "train-max"])  # in the workers / in place after they finish
def test_parallel_workers_give_same_dataset(tmp_path, png_classes, normalize):
    for i in range(20):
        Image.fromarray(np.full((20, 30), i * 1000, np.uint16)).save(png_classes / "normal" / f"extra{i}.png")
    a = prepare(f"folder:{png_classes}", tmp_path / "a", PrepareOptions(size=(16, 16), workers=1, normalize=normalize))
    b = prepare(f"folder:{png_classes}", tmp_path / "b", PrepareOptions(size=(16, 16), workers=2, normalize=normalize))
    assert a.n_items == b.n_items
    assert np.array_equal(np.load(tmp_path / "a/images.npy"), np.load(tmp_path / "b/images.npy"))
    assert json.loads((tmp_path / "a/stats.json").read_text())["content_hash"] == json.loads((tmp_path / "b/stats.json").read_text())["content_hash"]


def test_dicom_listing_and_reading_share_one_worker_pool(tmp_path, monkeypatch):
    import medgen.parallel

    root = tmp_path / "in" / "ct"
    root.mkdir(parents=True)
    for k in range(70):  # more than the listing's threshold for worker processes (64)
        write_dicom(root / f"f{k:03d}.dcm", np.full((12, 10), 40 * k, dtype=np.uint16))
    pools = []
    new_pool = medgen.parallel._new_pool
    monkeypatch.setattr(medgen.parallel, "_new_pool", lambda n: pools.append(new_pool(n)) or pools[-1])
    one = prepare(f"dicom:{tmp_path / 'in'}", tmp_path / "one", PrepareOptions(size=(8, 8), workers=1))
    assert pools == []
    two = prepare(f"dicom:{tmp_path / 'in'}", tmp_path / "two", PrepareOptions(size=(8, 8), workers=2))
    assert len(pools) == 1 and pools[0]._shutdown_thread  # forked once for both phases, and shut down
    assert one.n_items == two.n_items == 70
    assert np.array_equal(np.load(tmp_path / "one/images.npy"), np.load(tmp_path / "two/images.npy"))
    assert (tmp_path / "one/index.csv").read_text() == (tmp_path / "two/index.csv").read_text()


def test_builtin_sources_do_not_load_monai_before_forking(tmp_path):
    # built-ins are generated at the asked size; importing MONAI for the workers would cost ~4 s for nothing
    import subprocess
    import sys

    code = ("import sys; from medgen.data.prepare import PrepareOptions, prepare; from medgen.data.sources import SourceOptions; "
            f"prepare('builtin:brain-lesions', {str(tmp_path / 'out')!r}, PrepareOptions(size=(16, 16), workers=2, source=SourceOptions(n=40))); "
            "print('monai' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "False"
    assert len(np.load(tmp_path / "out" / "images.npy")) == 40


def test_dicom_headers_read_in_worker_processes_give_the_same_series(tmp_path):
    import pydicom
    from pydicom.uid import generate_uid

    from medgen.data.dicom import scan_series

    root = tmp_path / "many"
    root.mkdir()
    uids = [generate_uid(), generate_uid()]
    for k in range(70):  # two interleaved series, files named out of slice order
        write_dicom(root / f"f{(k * 31) % 70:03d}.dcm", np.full((8, 8), k, dtype=np.uint16), series_uid=uids[k % 2],
                    position=float(k), instance=k + 1)
    (root / "notes.txt").write_text("not DICOM")
    one, rej_one = scan_series(root, workers=1)
    two, rej_two = scan_series(root, workers=2)
    assert [(s.uid, s.files) for s in one] == [(s.uid, s.files) for s in two] and len(one) == 2
    assert rej_one == rej_two and [r[0] for r in rej_one] == [str(root / "notes.txt")]
    for s in one:  # sorted by slice position within each series
        positions = [int(pydicom.dcmread(str(f)).pixel_array[0, 0]) for f in s.files]
        assert positions == sorted(positions) and len(positions) == 35


def test_preview_is_one_grid_per_class_with_lesions_outlined(tmp_path, png_classes):
    out = tmp_path / "lesions"
    prepare("builtin:brain-lesions", out, PrepareOptions(size=(32, 32), workers=1, source=SourceOptions(n=24)))
    rgb = np.asarray(Image.open(out / "preview.png").convert("RGB")).astype(int)
    red = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)  # the mask outlines
    assert rgb.shape[:2] == (int(100 * (1.5 * 4 + 0.4)), int(100 * 1.4 * 8))  # 4 classes x 8 columns
    assert red.sum() > 50
    plain = tmp_path / "plain"  # no masks: nothing outlined
    prepare(f"folder:{png_classes}", plain, _opts(size=(16, 16)))
    rgb = np.asarray(Image.open(plain / "preview.png").convert("RGB")).astype(int)
    assert not ((rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)).any()


def test_images_are_written_once_behind_a_header_numpy_reads(tmp_path, png_classes):
    from medgen.data.prepare import _npy_header

    # the header is written for 0 images first and rewritten at the end: numpy pads axis 0 for growth
    assert len(_npy_header((0, 1, 16, 16))) == len(_npy_header((10**12, 1, 16, 16))) == len(_npy_header((7, 3, 8, 8, 8)))
    s = prepare(f"folder:{png_classes}", tmp_path / "out", _opts(size=(16, 20), normalize="train-max"))
    images = np.load(tmp_path / "out" / "images.npy", mmap_mode="r")
    assert images.shape == (s.n_items, 1, 16, 20) and images.dtype == np.float32
    header = len(_npy_header(images.shape))
    assert (tmp_path / "out" / "images.npy").stat().st_size == header + images.size * 4  # nothing after the last image
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["images.npy", "index.csv", "preview.png", "rejected.csv", "stats.json"]
    train = images[(pd.read_csv(tmp_path / "out" / "index.csv")["split"] == "train").to_numpy()]
    assert train.max() == 1.0  # divided in place by the training split's largest value
