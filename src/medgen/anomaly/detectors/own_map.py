"""The model's own per-pixel anomaly map (``model.anomaly_map``)."""
from __future__ import annotations

from medgen.anomaly.detectors.base import Detector, Output, batches
from medgen.anomaly.tuning import Scoring


class OwnMap(Detector):
    name = "model"
    summary = "the model's own anomaly map"

    def run(self, images, seed, describe):
        maps = batches(self.model, images, self.settings.batch_size, describe, self.model.anomaly_map)
        return Output(maps.mean(axis=1, keepdims=True), None)


class Segmenter(OwnMap):
    """A network trained to mark anomalies (``selfsup-anomaly``): its map is already a per-pixel
    probability of "anomalous", so an image is as anomalous as its most anomalous spot (the max,
    after 1 px of smoothing against single-pixel spikes). Averaging the top 5 % instead, as for
    error maps, dilutes a lesion of a few pixels into the rest of the brain."""

    name = "segmenter"
    summary = "the anomaly probabilities of a network trained on normals with synthetic anomalies"
    scoring = Scoring(smooth=1.0, score="max", top_percent=5.0, edge_margin=0.0)
