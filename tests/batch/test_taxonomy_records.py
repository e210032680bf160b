"""Batch records carry the taxonomy's canonical labels: the batch inspector keeps the config's taxonomy."""

from __future__ import annotations

import datetime

import numpy as np

from agent.config.models import AgentConfig
from agent.core.detections import Detection, PrefilterResult
from agent.core.frame import Frame
from agent.taxonomy import Taxonomy, TaxonomyFile
from agent.tooling.batch.items import ItemId, build_record
from agent.tooling.batch.runner import batch_inspector

TAXONOMY = Taxonomy.from_file(TaxonomyFile.model_validate({"labels": [
    {"label": "SURFACE_SCRATCH", "code": "D-101", "severity": "low", "synonyms": ["scratch"]}]}))


class _Prefilter:
    """Finds a scratch (trusted) and a stain (uncertain) in every frame."""

    def infer(self, image: np.ndarray) -> PrefilterResult:
        return PrefilterResult("fake@0", (Detection("scratch", 0, 0.9, (1.0, 2.0, 30.0, 40.0)),
                                          Detection("stain", 1, 0.4, (5.0, 5.0, 9.0, 9.0))), 1.5)


def test_batch_records_have_canonical_labels_beside_the_raw_ones() -> None:
    config = AgentConfig(device_id="box1").with_taxonomy(TAXONOMY)
    inspector = batch_inspector(config, _Prefilter())
    frame = Frame("batch", 1, datetime.datetime.now(datetime.timezone.utc), 0.0, np.zeros((48, 64, 3), np.uint8))
    record = build_record(ItemId("a.png"), inspector.inspect(frame).event)
    assert [(t["label"], t["canonical"], t["code"], t["severity"]) for t in record["tags"]] == [
        ("scratch", "SURFACE_SCRATCH", "D-101", "low"), ("stain", None, None, None)]
