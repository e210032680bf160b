"""``models train --task anomaly`` before anything slow, without torch: the good set (counts, sizes, a recorder's
folder whose VLM-passed frames join it: the flywheel), the generic synthetic anomalies, the option checks."""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest

from agent.errors import DatasetError
from agent.tooling.training.anomaly.data import MIN_GOOD, collect_good, warnings_for
from agent.tooling.training.anomaly.run import default_imgsz, split_good
from agent.tooling.training.anomaly.synth import make_anomalous
from tests.cli.test_models_cli import assert_fails_cleanly, edge_agent


def _images(folder: pathlib.Path, count: int, size: tuple[int, int] = (64, 48), start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((size[1], size[0], 3), 100 + i % 50, np.uint8))


def _record(folder: pathlib.Path, rid: str, vlm_verdict: str | None, confidence: float) -> None:
    records = folder / "records"
    records.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(records / f"{rid}.jpg"), np.full((48, 64, 3), 90, np.uint8))
    doc = {"schema": "edge-agent/dataset-record/v1", "id": rid, "kind": "escalated",
           "model": {"id": "m@1", "task": "anomaly", "names": ["anomaly"]},
           "detections": [{"label": "anomaly", "class_id": 0, "confidence": confidence, "box": None}],
           "vlm": None if vlm_verdict is None else {"verdict": vlm_verdict, "tags": []}}
    (records / f"{rid}.json").write_text(json.dumps(doc))


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
    assert "only 40 good images; 200 or more" in few and "rests on the 8 held out" in few
    assert "2 different sizes (64x48: 30, 80x80: 10)" in mixed


def test_an_undecodable_image_is_named(tmp_path: pathlib.Path) -> None:
    _images(tmp_path / "good", 30)
    (tmp_path / "good" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        collect_good([tmp_path / "good"])


def test_the_flywheel_frames_the_vlm_passed_join_the_good_set(tmp_path: pathlib.Path) -> None:
    _images(tmp_path / "good", 30)
    _record(tmp_path / "rec", "a1", "pass", 0.62)  # the model scored it high, the VLM said good: joins
    _record(tmp_path / "rec", "a2", "pass", 0.1)  # a confident pass the VLM confirmed: joins
    _record(tmp_path / "rec", "a3", "defect", 0.9)  # a real defect: left out
    _record(tmp_path / "rec", "a4", None, 0.2)  # a confident sample the VLM never saw: left out
    good = collect_good([tmp_path / "good", tmp_path / "rec"])
    assert len(good.paths) == 32 and good.vlm_passed_high == 1
    assert {p.name for p in good.paths if p.parent.name == "records"} == {"a1.jpg", "a2.jpg"}
    assert good.sources[1].endswith("2 frames the VLM called pass (1 of them scored high by the anomaly model), "
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
