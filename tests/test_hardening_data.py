"""Hostile and careless inputs to data preparation: each becomes a rejected row with a one-line
reason naming the file (never an internal error, a hang or a leftover folder)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from medgen.data.io import read_image
from medgen.data.prepare import PrepareOptions, prepare
from medgen.errors import InputFileError, UserError

from conftest import write_dicom


def _opts(**kw):
    kw.setdefault("workers", 1)
    return PrepareOptions(size=(16, 16), **kw)


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG of a few dozen bytes whose header declares ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b""))
    return path


def _good_pngs(folder: Path, n: int = 4) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(folder / f"ok{i}.png")


def _rejected(out: Path) -> dict[str, str]:
    import pandas as pd

    table = pd.read_csv(out / "rejected.csv", dtype=str, keep_default_na=False)
    return {Path(s).name: r for s, r in zip(table["source"], table["reason"])}


def test_png_declaring_huge_size_is_a_rejected_row(tmp_path):
    src = tmp_path / "imgs"
    _good_pngs(src)
    _png_declaring(src / "bomb.png", 30000, 30000)
    _png_declaring(src / "big.png", 12000, 12000)
    summary = prepare(f"folder:{src}", tmp_path / "out", _opts())
    assert summary.n_items == 4
    reasons = _rejected(tmp_path / "out")
    assert "larger than the limit" in reasons["bomb.png"] and "MEDGEN_MAX_PIXELS" in reasons["bomb.png"]
    assert "larger than the limit" in reasons["big.png"]


def test_pixel_limit_is_a_setting(tmp_path, monkeypatch):
    _good_pngs(tmp_path, 1)
    assert read_image(tmp_path / "ok0.png").shape == (1, 20, 24)
    monkeypatch.setenv("MEDGEN_MAX_PIXELS", "400")
    with pytest.raises(InputFileError, match="larger than the limit of 400"):
        read_image(tmp_path / "ok0.png")
    monkeypatch.setenv("MEDGEN_MAX_PIXELS", "lots")
    with pytest.raises(UserError, match="MEDGEN_MAX_PIXELS"):
        read_image(tmp_path / "ok0.png")


def _float_dicom(path: Path, pixels: np.ndarray) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality = generate_uid(), "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 32
    ds.FloatPixelData = pixels.astype(np.float32).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.mark.parametrize("kind", ["dicom", "folder"])
def test_dicom_gets_the_checks_every_reader_gets(tmp_path, kind):
    src = tmp_path / "dcm"
    src.mkdir()
    for i in range(3):
        write_dicom(src / f"ok{i}.dcm", np.arange(64).reshape(8, 8) + i)
    nan = np.ones((8, 8), np.float32)
    nan[2, 3] = np.nan
    _float_dicom(src / "nan.dcm", nan)
    write_dicom(src / "tiny.dcm", np.ones((1, 1)))
    summary = prepare(f"{kind}:{src}", tmp_path / "out", _opts(normalize="none"))
    assert summary.n_items == 3
    reasons = _rejected(tmp_path / "out")
    assert "NaN" in reasons["nan.dcm"]
    assert "too small" in reasons["tiny.dcm"]
    assert np.isfinite(np.load(tmp_path / "out" / "images.npy")).all()


def test_dicom_decoder_failure_is_one_line(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate

    path = write_dicom(tmp_path / "j2k.dcm", np.ones((8, 8)))
    ds = pydicom.dcmread(str(path))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # JPEG 2000, with bytes no decoder accepts
    ds.PixelData = encapsulate([b"\0" * 20])
    ds.save_as(str(path))
    with pytest.raises(InputFileError) as err:
        read_image(path)
    assert "\n" not in str(err.value) and "cannot decode DICOM pixel data" in str(err.value)


def _manifest(tmp_path: Path, rows: list[str], header: str = "path,label") -> Path:
    csv = tmp_path / "meta.csv"
    csv.write_text("\n".join([header, *rows]) + "\n")
    return csv


def test_roi_with_a_huge_number_is_a_rejected_row(tmp_path):
    _good_pngs(tmp_path / "imgs", 2)
    huge = "9" * 400
    csv = _manifest(tmp_path, ['imgs/ok0.png,a,"[2, 2, 12, 12]"', f'imgs/ok1.png,a,"[2, 2, {huge}, 12]"'], "path,label,roi")
    summary = prepare(f"csv:{csv}", tmp_path / "out", _opts(source=__import__("medgen.data.sources", fromlist=["SourceOptions"]).SourceOptions(roi_column="roi")))
    assert summary.n_items == 1
    assert "out of range" in _rejected(tmp_path / "out")["ok1.png"]


def test_manifest_rows_naming_non_regular_files_are_rejected(tmp_path):
    from medgen.data.sources import SourceOptions, csv_records

    _good_pngs(tmp_path / "imgs", 1)
    csv = _manifest(tmp_path, ["imgs/ok0.png,a", "/dev/zero,a", "imgs,a"])
    records, rejected = csv_records(csv, SourceOptions())
    assert [r.source for r in records] == [str(tmp_path / "imgs" / "ok0.png")]
    reasons = dict(rejected)
    assert "not a regular file" in reasons["/dev/zero"]
    assert "folder" in reasons[str(tmp_path / "imgs")]


def test_missing_mask_is_named_not_the_image(tmp_path):
    _good_pngs(tmp_path / "imgs", 2)
    csv = _manifest(tmp_path, ["imgs/ok0.png,a,", "imgs/ok1.png,a,masks/gone.png"], "path,label,mask")
    summary = prepare(f"csv:{csv}", tmp_path / "out", _opts())
    assert summary.n_items == 1
    reason = _rejected(tmp_path / "out")["ok1.png"]
    assert "mask" in reason and "gone.png" in reason


def test_mask_that_cannot_be_read_is_named(tmp_path):
    from medgen.data.prepare import process_record
    from medgen.data.sources import Record

    _good_pngs(tmp_path, 1)
    (tmp_path / "bad_mask.png").write_bytes(b"not a png")
    record = Record(id="x", source=str(tmp_path / "ok0.png"), kind="file", paths=(str(tmp_path / "ok0.png"),),
                    mask=str(tmp_path / "bad_mask.png"))
    items, rejected = process_record(record, _opts())
    assert not items and rejected[0][1].startswith(f"mask {tmp_path / 'bad_mask.png'}: cannot read image")


def test_stale_temporary_folders_are_removed_by_the_next_preparation(tmp_path):
    _good_pngs(tmp_path / "imgs", 3)
    stale = tmp_path / ".out.tmp-killed1"
    (stale / "sub").mkdir(parents=True)
    (stale / "images.npy").write_bytes(b"\0" * 100)
    other = tmp_path / ".other.tmp-keep"
    other.mkdir()
    prepare(f"folder:{tmp_path / 'imgs'}", tmp_path / "out", _opts())
    assert not stale.exists()
    assert other.exists()  # another output's temporaries are not this preparation's business
    assert (tmp_path / "out" / "images.npy").exists()
    assert not (tmp_path / ".out.lock").exists()


def test_second_preparation_into_the_same_output_is_refused(tmp_path):
    import os

    from medgen.fsio import acquire_lock

    _good_pngs(tmp_path / "imgs", 3)
    with acquire_lock(tmp_path / ".out.lock", "output folder"):  # as a running preparation holds it
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            prepare(f"folder:{tmp_path / 'imgs'}", tmp_path / "out", _opts())
    assert not (tmp_path / "out").exists()
    prepare(f"folder:{tmp_path / 'imgs'}", tmp_path / "out", _opts())  # once it is done, the next may go
    assert (tmp_path / "out" / "index.csv").exists()


def test_output_written_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    """The final rename checks again: a folder that appeared during the preparation is kept."""
    import medgen.data.prepare as prep

    _good_pngs(tmp_path / "imgs", 3)
    out = tmp_path / "out"
    real = prep._write_rejected

    def appear(folder, rejected):
        real(folder, rejected)
        out.mkdir()
        (out / "index.csv").write_text("someone else's\n")

    monkeypatch.setattr(prep, "_write_rejected", appear)
    with pytest.raises(UserError, match="already exists"):
        prepare(f"folder:{tmp_path / 'imgs'}", out, _opts())
    assert (out / "index.csv").read_text() == "someone else's\n"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_formula_like_cells_are_written_as_text(tmp_path):
    import pandas as pd

    from medgen.data.dataset import PreparedDataset

    _good_pngs(tmp_path / "imgs", 4)
    rows = ['imgs/ok0.png,"=HYPERLINK(""http://x"")",@SUM(1)', "imgs/ok1.png,-1,+2+A1", "imgs/ok2.png,-1,x", "imgs/ok3.png,plain,-0.5"]
    csv = _manifest(tmp_path, rows, "path,label,note")
    prepare(f"csv:{csv}", tmp_path / "out", _opts())
    index = pd.read_csv(tmp_path / "out" / "index.csv", dtype=str, keep_default_na=False)
    assert set(index["label"]) == {"'=HYPERLINK(\"http://x\")", "-1", "plain"}
    assert set(index["note"]) == {"'@SUM(1)", "'+2+A1", "x", "-0.5"}
    assert PreparedDataset(tmp_path / "out").labels == sorted(set(index["label"]))  # stats.json agrees with the index
