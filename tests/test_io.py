import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conftest import write_dicom
from medgen.data.io import read_image
from medgen.errors import InputFileError


def test_png_16bit_values_kept(tmp_path):
    arr = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16).repeat(4, 0).repeat(4, 1)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (1, 8, 8) and out.dtype == np.float32
    assert out.max() == 65535 and out.min() == 0 and out[0, 4, 0] == 40000


def test_png_8bit_rgb_grey_and_rgb(tmp_path):
    arr = np.zeros((6, 5, 3), np.uint8)
    arr[..., 0] = 200
    Image.fromarray(arr).save(tmp_path / "c.png")
    grey = read_image(tmp_path / "c.png")
    assert grey.shape == (1, 6, 5)
    assert np.allclose(grey, 0.299 * 200, atol=1e-3)
    colour = read_image(tmp_path / "c.png", rgb=True)
    assert colour.shape == (3, 6, 5) and colour[0].max() == 200 and colour[1].max() == 0


def test_jpeg_and_tiff(tmp_path):
    import tifffile

    Image.fromarray(np.full((9, 7), 120, np.uint8)).save(tmp_path / "j.jpg")
    assert abs(read_image(tmp_path / "j.jpg").mean() - 120) < 2
    tifffile.imwrite(tmp_path / "t.tif", np.full((5, 6), 3000, np.uint16))
    t = read_image(tmp_path / "t.tif")
    assert t.shape == (1, 5, 6) and t.max() == 3000


def test_nifti_orientation_and_shape(tmp_path):
    data = np.zeros((10, 12, 8), np.float32)  # (x, y, z) in RAS
    data[:, :, 7] = 5  # most superior slice
    data[:, 11, :] += 1  # most anterior row
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    vol = read_image(tmp_path / "v.nii.gz")
    assert vol.shape == (1, 8, 12, 10)  # (C, z, y, x)
    assert vol[0, 0].min() >= 5  # superior first
    assert np.all(vol[0, 3, 0, :] == 1)  # anterior at the top of each axial slice


def test_nifti_4d_rejected(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), tmp_path / "f.nii")
    with pytest.raises(InputFileError, match="4D NIfTI"):
        read_image(tmp_path / "f.nii")


def test_numpy_reader_refuses_pickles(tmp_path):
    np.save(tmp_path / "ok.npy", np.ones((4, 5)))
    assert read_image(tmp_path / "ok.npy").shape == (1, 4, 5)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputFileError):
        read_image(tmp_path / "obj.npy")


def test_dicom_rescale(tmp_path):
    write_dicom(tmp_path / "ct.dcm", np.full((8, 8), 1064, np.uint16), intercept=-1024.0)
    assert np.allclose(read_image(tmp_path / "ct.dcm"), 40.0)


def test_dicom_monochrome1_inverted_and_voi_window(tmp_path):
    img = np.zeros((8, 8), np.uint16)
    img[:4] = 1000  # in MONOCHROME1, high = dark
    write_dicom(tmp_path / "mg.dcm", img, modality="MG", photometric="MONOCHROME1", window=(500, 1000))
    out = read_image(tmp_path / "mg.dcm")[0]
    assert out[:4].mean() < out[4:].mean()  # the formerly high (dark) rows are now darker
    write_dicom(tmp_path / "mg2.dcm", np.array([[0, 250], [500, 1000]], np.uint16).repeat(4, 0).repeat(4, 1), modality="MG", window=(500, 500))
    windowed = read_image(tmp_path / "mg2.dcm")[0]
    # values below C-W/2 (250) clamp to the window's floor, above C+W/2 (750) to its ceiling
    assert windowed[0, 0] == windowed[0, 4] and windowed[4, 4] > windowed[4, 0] > windowed[0, 0]


def test_dicom_ct_keeps_hu_despite_window(tmp_path):
    write_dicom(tmp_path / "ct.dcm", np.full((8, 8), 3024, np.uint16), intercept=-1024.0, window=(40, 400))
    assert np.allclose(read_image(tmp_path / "ct.dcm"), 2000.0)


def test_dicom_multiframe(tmp_path):
    frames = np.stack([np.full((6, 6), k, np.uint16) for k in range(5)])
    write_dicom(tmp_path / "mf.dcm", frames, frames=True)
    out = read_image(tmp_path / "mf.dcm")
    assert out.shape == (1, 5, 6, 6) and out[0, 3].mean() == 3


@pytest.mark.parametrize("name,content", [("bad.png", b"\x89PNG\r\n\x1a\n garbage"), ("bad.dcm", b"DICM" * 10),
                                          ("bad.nii.gz", b"\x1f\x8b not gzip"), ("bad.tif", b"II*\x00junk")])
def test_corrupt_files_raise_input_error(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputFileError) as err:
        read_image(tmp_path / name)
    assert name in str(err.value)


def test_truncated_png(tmp_path):
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="t.png"):
        read_image(tmp_path / "t.png")


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="file not found"):
        read_image(tmp_path / "nope.png")


def test_nifti_voxel_size_is_in_read_niftis_layout_for_a_permuted_affine(tmp_path):
    import nibabel as nib

    from medgen.data.io import nifti_voxel_size, read_nifti

    # stored axes: 0 is S-I at 3 mm, 1 is R-L (flipped) at 1 mm, 2 is A-P at 2 mm
    aff = np.array([[0, -1.0, 0, 0], [0, 0, 2.0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), aff), path)
    assert read_nifti(path).shape == (1, 5, 7, 6)  # (z, y, x)
    assert nifti_voxel_size(path) == (3.0, 2.0, 1.0)  # the same (z, y, x) order
