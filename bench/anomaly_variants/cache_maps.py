"""Cache a detector's raw maps of a trained run: the normal validation images, copies of them with
synthetic lesions (seed 12345) and the test inputs (prepared datasets, or FOLDER:MASKS folders).
Used with score_variants.py for the per-position z-score comparison in docs/anomaly-detection.md.

    PYTHONPATH=src python bench/anomaly_variants/cache_maps.py RUN padim OUT.npz /abs/prepared/tier ...
"""
import sys, numpy as np
from pathlib import Path
from medgen.anomaly import detectors as registry
from medgen.anomaly.detectors.base import Settings
from medgen.anomaly.detect import _from_prepared, _from_folder, _noise_levels
from medgen.data.imageset import is_prepared_dataset
from medgen.models.conv_ae import restoring_from_checkpoint
from medgen.sampling import load_run_model

run, detname, out = sys.argv[1], sys.argv[2], sys.argv[3]
kw = dict(a.split("=", 1) for a in sys.argv[4:] if "=" in a and not a.startswith("/"))
inputs = [a for a in sys.argv[4:] if a.startswith("/")]
with restoring_from_checkpoint():
    cfg, model, rundir = load_run_model(run, None)
rd = rundir.data(); subset = rd.get("subset") or {}
ds = Path(rd["dataset"])
s = Settings(draws=int(kw.get("draws", 8)), noise_levels=_noise_levels(kw.get("noise", "0.1")), steps=int(kw.get("steps", 10)))
det = registry.detector_class(registry.choose(model, detname))(model, s)
if det.fits_on_normals:
    det.fit(_from_prepared(ds, "train", subset, "tr").images, lambda *a: None)
val = _from_prepared(ds, "val", subset, "val")
from medgen.anomaly.synthetic import add_lesions
syn, smask = add_lesions(val.images, 12345)
res = {"val_x": val.images, "val_raw": det.run(val.images, 1, "val").maps, "syn_x": syn, "syn_raw": det.run(syn, 1, "syn").maps, "syn_mask": smask}
for inp in inputs:
    p, _, m = inp.partition(":")
    p = Path(p)
    if is_prepared_dataset(p):
        it = _from_prepared(p, "test", None, p.name)
    else:
        it = _from_folder(p, Path(m), {**rd, "keep_aspect": True}, model.info)
    name = p.name if p.name != "test" else p.parent.name
    res[f"{name}_x"] = it.images; res[f"{name}_raw"] = det.run(it.images, 0, name).maps
    res[f"{name}_mask"] = it.masks; res[f"{name}_labels"] = np.array(it.labels)
np.savez_compressed(out, **res)
print("saved", out, list(res))
