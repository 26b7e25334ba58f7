"""Writing every conditioned or inpainted sample together with its mask.

- ``png``: ``NAME.png`` (16-bit grey) + ``NAME_mask.png`` (8-bit, the label values 0..K);
- ``nii``: ``NAME.nii.gz`` + ``NAME_mask.nii.gz`` (uint8 labels, same orientation);
- ``npy``: ``NAME.npy`` + ``NAME_mask.npy``;
- ``dcm``: ``NAME.dcm`` (the synthetic secondary-capture image of :mod:`medgen.data.export`) +
  ``NAME_seg.dcm``, a DICOM Segmentation made with highdicom that references the image (its
  SOP Instance UID) and shares its study and frame of reference. Both are marked synthetic and
  carry no patient data (patient name/ID "SYNTHETIC", empty birth date and sex).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.data.export import SYNTHETIC_NOTE, write_image

MASK_SUFFIX = {"png": "_mask.png", "nii": "_mask.nii.gz", "npy": "_mask.npy", "dcm": "_seg.dcm"}


def write_pair(stem: Path, image: np.ndarray, mask: np.ndarray, fmt: str, label: str = "", series_uid: str | None = None,
               instance: int = 1, segment_label: str = "lesion") -> tuple[Path, Path]:
    """(image file, mask file) for one (C, *size) image in [0, 1] and its (1, *size) label map."""
    img_path = write_image(stem, image, fmt, label, series_uid, instance)
    mask_path = Path(str(stem) + MASK_SUFFIX[fmt])
    m = np.asarray(mask, dtype=np.uint8)
    if fmt == "png":
        from PIL import Image

        Image.fromarray(m[0]).save(mask_path)
    elif fmt == "npy":
        np.save(mask_path, m)
    elif fmt == "nii":
        import nibabel as nib

        from medgen.data.export import write_nifti

        write_nifti(mask_path, m.astype(np.float32))
        loaded = nib.load(str(mask_path))  # store the labels as integers, same orientation as the image
        nib.save(nib.Nifti1Image(np.asarray(loaded.dataobj).round().astype(np.uint8), loaded.affine), str(mask_path))
    else:
        write_dicom_seg(img_path, mask_path, m[0], segment_label)
    return img_path, mask_path


def _complete_type2(ds) -> None:
    """Empty type-2 patient/study attributes a DICOM SEG copies from its source image (no patient data)."""
    for key in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        if key not in ds:
            setattr(ds, key, "")
    ds.PatientName = "SYNTHETIC^"
    if "SeriesNumber" not in ds:
        ds.SeriesNumber = 1


def write_dicom_seg(image_path: Path, seg_path: Path, mask: np.ndarray, segment_label: str = "lesion") -> None:
    """A binary DICOM SEG of ``mask`` (H, W) or (frames, H, W) with one segment per label value."""
    import highdicom as hd
    import pydicom
    from highdicom.sr.coding import CodedConcept

    import medgen

    src = pydicom.dcmread(str(image_path))
    _complete_type2(src)
    src.save_as(str(image_path), enforce_file_format=True)
    values = [int(v) for v in np.unique(mask) if v > 0]
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(name="medgen", version=medgen.__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i + 1, segment_label=f"{segment_label} {v}" if len(values) > 1 else segment_label,
        segmented_property_category=CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        segmented_property_type=CodedConcept("108369006", "SCT", "Neoplasm"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
    ) for i, v in enumerate(values)]
    # one binary plane per segment, in segment order (highdicom's label-map input needs 1..K consecutive)
    planes = np.stack([(mask == v) for v in values], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=[src], pixel_array=planes if mask.ndim == 3 else planes[None],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=int(src.SeriesNumber) + 1000, sop_instance_uid=hd.UID(),
        instance_number=int(getattr(src, "InstanceNumber", 1)), manufacturer="medgen", manufacturer_model_name="medgen",
        software_versions=medgen.__version__, device_serial_number="0",
        series_description="medgen synthetic mask"[:64], content_description="conditioning mask of a synthetic image"[:64],
    )
    seg.ImageComments = SYNTHETIC_NOTE
    seg.save_as(str(seg_path))


def overlay_figure(images: np.ndarray, masks: np.ndarray, path: Path, titles: list[str] | None = None, n: int = 8,
                   title: str = "") -> Path:
    """Rows mask / image / overlay (mask outline in red) for up to ``n`` pairs; volumes show their middle slice."""
    from medgen.plots import _plt, middle, save_figure

    plt = _plt()
    k = min(n, len(images))
    fig, axes = plt.subplots(3, k, figsize=(1.8 * k, 5.6), squeeze=False)
    for j in range(k):
        img, m = middle(images[j]), middle(masks[j].astype(np.float32))
        for row, (show, cmap) in enumerate(((m, "viridis"), (img, "gray"), (img, "gray"))):
            ax = axes[row, j]
            ax.imshow(show, cmap=cmap, vmin=0, vmax=max(1.0, float(m.max())) if row == 0 else 1.0)
            ax.set_xticks([])
            ax.set_yticks([])
        if m.max() > 0:
            axes[2, j].contour(m > 0, levels=[0.5], colors="red", linewidths=0.8)
        if titles:
            axes[0, j].set_title(titles[j], fontsize=7)
    for row, name in enumerate(("mask", "image", "overlay")):
        axes[row, 0].set_ylabel(name)
    return save_figure(fig, path, title, dpi=110)
