"""The model's own per-pixel anomaly map (``model.anomaly_map``)."""
from __future__ import annotations

from medgen.anomaly.detectors.base import Detector, Output, batches


class OwnMap(Detector):
    name = "model"
    summary = "the model's own anomaly map"

    def run(self, images, seed, describe):
        maps = batches(self.model, images, self.settings.batch_size, describe, self.model.anomaly_map)
        return Output(maps.mean(axis=1, keepdims=True), None)


class Segmenter(OwnMap):
    """A network trained to mark anomalies (``selfsup-anomaly``): its probability map, scored as the
    feature detectors' maps are (``--tune auto`` chooses smoothing and score on normals)."""

    name = "segmenter"
    summary = "the anomaly probabilities of a network trained on normals with synthetic anomalies"
    tunes_by_default = True
