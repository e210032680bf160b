"""``models train --task anomaly`` before anything slow, without torch: the good set (counts, sizes, a recorder's
folder whose VLM-passed frames join it: the flywheel), the generic synthetic anomalies, the option checks."""

from __future__ import annotations

import datetime
import pathlib

import cv2
import numpy as np
import pytest

from agent.config.models import TriageConfig
from agent.core.detections import Detection, PrefilterResult
from agent.core.event import build_event
from agent.core.frame import Frame
from agent.core.inspection import Inspection
from agent.dataset.recorder import ModelRef
from agent.errors import DatasetError
from agent.tooling.training.anomaly.data import MIN_GOOD, collect_good, warnings_for
from agent.tooling.training.anomaly.run import default_imgsz, split_good
from agent.tooling.training.anomaly.synth import make_anomalous
from agent.triage.policy import decide
from tests.cli.test_models_cli import assert_fails_cleanly, edge_agent
from tests.dataset.recording import T0, answered, write_recording

ANOMALY_MODEL = ModelRef("surface-anomaly@0123456789ab", "0123456789ab" + "0" * 52, "anomaly", ("anomaly",))


def _images(folder: pathlib.Path, count: int, size: tuple[int, int] = (64, 48), start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((size[1], size[0], 3), 100 + i % 50, np.uint8))


def test_too_few_good_images_is_an_error_with_the_numbers(tmp_path: pathlib.Path) -> None:
    _images(tmp_path / "good", 12)
    with pytest.raises(DatasetError, match=f"12 good images in .*needs at least {MIN_GOOD}"):
        collect_good([tmp_path / "good"])


def test_few_and_mixed_sizes_are_warnings_with_the_numbers(tmp_path: pathlib.Path) -> None:
    _images(tmp_path / "good", 30)
    _images(tmp_path / "good", 10, size=(80, 80), start=30)
    good = collect_good([tmp_path / "good"])
    assert len(good.paths) == 40 and good.sizes == {(64, 48): 30, (80, 80): 10}
    few, mixed = warnings_for(good)
    assert "only 40 good images; 200 or more" in few and "rests on the 10 held out" in few
    assert "2 different sizes (64x48: 30, 80x80: 10)" in mixed


def test_an_undecodable_image_is_named(tmp_path: pathlib.Path) -> None:
    _images(tmp_path / "good", 30)
    (tmp_path / "good" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        collect_good([tmp_path / "good"])


def _anomaly_inspection(sequence: int, confidence: float) -> Inspection:
    """A frame the anomaly prefilter scored ``confidence``, triaged with the default band, as the agent does."""
    frame = Frame("belt", sequence, T0 + datetime.timedelta(seconds=sequence), 0.0,
                  np.full((48, 64, 3), 90 + sequence, np.uint8))
    region = Detection("anomaly", 0, confidence, (10.0, 10.0, 30.0, 30.0)) if confidence >= 0.5 else None
    result = PrefilterResult(ANOMALY_MODEL.model_id, (region,) if region else (), 2.0, task="anomaly",
                             anomaly=confidence)
    decision = decide(result, TriageConfig())
    event = build_event(device="box1", camera="belt", sequence=sequence, captured_at=frame.captured_at,
                        frame_width=64, frame_height=48, decision=decision, model_id=ANOMALY_MODEL.model_id,
                        prefilter_latency_ms=2.0)
    return Inspection(frame, result, decision, event)


def test_the_flywheel_frames_the_vlm_passed_join_the_good_set(tmp_path: pathlib.Path) -> None:
    """Recorded through the agent's own recorder and store: escalated frames the VLM called pass although the
    anomaly score was high join the good set at the next training; the VLM's defects and unanswered frames do
    not."""
    _images(tmp_path / "good", 30)
    high_pass, low_pass, defect, sample = (_anomaly_inspection(1, 0.62), _anomaly_inspection(2, 0.45),
                                           _anomaly_inspection(3, 0.9), _anomaly_inspection(4, 0.1))
    assert [i.decision.verdict for i in (high_pass, low_pass, defect, sample)] == [
        "uncertain", "uncertain", "defect", "pass"]
    records = write_recording(tmp_path / "rec", [
        (high_pass, answered(high_pass.event, "pass", ())),  # scored high, the VLM said good: joins, counted
        (low_pass, answered(low_pass.event, "pass", ())),  # under the threshold, escalated, good: joins
        (defect, answered(defect.event, "defect", ("scratch",))),  # a real defect: left out
        (sample, None),  # a confident sample the VLM never saw: left out
    ], ANOMALY_MODEL)
    good = collect_good([tmp_path / "good", tmp_path / "rec"])
    assert len(good.paths) == 32 and good.vlm_passed_high == 1
    assert {p.stem for p in good.paths if p.parent.name == "records"} == {records[0].id, records[1].id}
    assert good.sources[1].endswith("2 frames the VLM called pass (1 of them over the anomaly model's threshold), "
                                    "2 other records left out")


def test_a_missing_folder_is_an_error() -> None:
    with pytest.raises(DatasetError, match="not a folder; expected a folder of good images"):
        collect_good([pathlib.Path("/nonexistent/good")])


@pytest.mark.parametrize(("sizes", "expected"), [
    ({(640, 480): 10}, (240, 320)),  # 4:3 -> longer side 320; sides multiples of 8
    ({(640, 640): 5, (64, 48): 1}, (320, 320)),  # the most common size decides
])
def test_default_input_size(sizes: dict[tuple[int, int], int], expected: tuple[int, int]) -> None:
    assert default_imgsz(sizes) == expected


def test_the_held_out_split_is_a_fifth_and_at_least_ten() -> None:
    train, held = split_good(100, seed=1)
    assert len(held) == 20 and len(train) == 80 and not set(train) & set(held)
    assert len(split_good(30, seed=1)[1]) == 10


@pytest.mark.parametrize("grey", [False, True])
def test_synthetic_anomalies_change_only_their_mask(grey: bool) -> None:
    rng = np.random.default_rng(3)
    crop = np.full((96, 96, 3), 120, np.uint8)
    image, mask = make_anomalous(rng, crop, np.full((128, 128, 3), 30, np.uint8), count=2, grey=grey)
    assert mask.shape == (96, 96) and mask.min() >= 0.0 and mask.max() <= 1.0 and mask.sum() > 0
    changed = np.abs(image.astype(int) - crop).max(axis=2) > 0
    assert not changed[mask == 0].any()  # nothing outside the mask moved
    if grey:
        assert np.array_equal(image[..., 0], image[..., 2])


def test_the_command_refuses_a_base_for_an_anomaly_model(tmp_path: pathlib.Path) -> None:
    _images(tmp_path / "good", 30)
    proc = edge_agent("models", "train", "--task", "anomaly", "--data", str(tmp_path / "good"), "--base", "x.onnx",
                      "--out", str(tmp_path / "out"))
    assert_fails_cleanly(proc, "an anomaly model is trained from scratch on the good frames; leave --base out")


def test_the_command_says_when_there_are_too_few_good_images(tmp_path: pathlib.Path) -> None:
    _images(tmp_path / "good", 5)
    proc = edge_agent("models", "train", "--task", "anomaly", "--data", str(tmp_path / "good"),
                      "--out", str(tmp_path / "out"))
    assert_fails_cleanly(proc, "5 good images in")
    assert not (tmp_path / "out").exists()
