"""The synthetic YOLO dataset: layout, labels that match the ground truth, clear errors."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import cv2
import pytest
import yaml

from agent.capture.synthetic import DEFECT_CLASSES
from agent.dataset.synth import write_synthetic_dataset
from agent.errors import DatasetError


def test_layout_labels_and_data_yaml(tmp_path: pathlib.Path) -> None:
    seen: list[tuple[str, int, int]] = []
    data_yaml = write_synthetic_dataset(tmp_path / "ds", 6, 3, seed=1,
                                        progress=lambda split, done, total: seen.append((split, done, total)))
    doc = yaml.safe_load(data_yaml.read_text())
    assert doc["names"] == dict(enumerate(DEFECT_CLASSES)) and doc["train"] == "images/train"
    assert seen[-1] == ("val", 3, 3) and seen[5] == ("train", 6, 6)
    for split, n in (("train", 6), ("val", 3)):
        images = sorted((tmp_path / "ds" / "images" / split).glob("*.jpg"))
        assert len(images) == n
        for img in images:
            h, w = cv2.imread(str(img)).shape[:2]
            label = (tmp_path / "ds" / "labels" / split / img.name).with_suffix(".txt")
            truth = json.loads((tmp_path / "ds" / "truth" / split / img.name).with_suffix(".json").read_text())
            rows = [line.split() for line in label.read_text().splitlines()]
            assert len(rows) == len(truth["defects"])
            for row, d in zip(rows, truth["defects"], strict=True):
                cls, cx, cy, bw, bh = int(row[0]), *map(float, row[1:])
                assert DEFECT_CLASSES[cls] == d["label"]
                x1, y1, x2, y2 = d["box"]
                assert cx == pytest.approx((x1 + x2) / 2 / w, abs=1e-5)
                assert bh == pytest.approx((y2 - y1) / h, abs=1e-5)
                assert 0 < bw <= 1 and 0 < bh <= 1 and 0 <= cx <= 1 and 0 <= cy <= 1


def test_train_and_val_do_not_share_pictures(tmp_path: pathlib.Path) -> None:
    write_synthetic_dataset(tmp_path / "ds", 4, 4, seed=9)
    train = {p.read_bytes() for p in (tmp_path / "ds/images/train").glob("*.jpg")}
    val = {p.read_bytes() for p in (tmp_path / "ds/images/val").glob("*.jpg")}
    assert not train & val


@pytest.mark.parametrize(("n_train", "n_val", "message"), [(0, 1, "at least 1"), (1, -2, "at least 1")])
def test_bad_sizes(tmp_path: pathlib.Path, n_train: int, n_val: int, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        write_synthetic_dataset(tmp_path / "ds", n_train, n_val)


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: pathlib.Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="is not empty"):
        write_synthetic_dataset(tmp_path / "ds", 1, 1)
    assert (tmp_path / "ds" / "keep.txt").read_text() == "mine"


def test_cli_dataset_synth(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "agent.cli.main", "dataset", "synth", str(tmp_path / "d"),
                           "--train", "3", "--val", "2"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("data.yaml") and len(list((tmp_path / "d/images/val").glob("*.jpg"))) == 2
    again = subprocess.run([sys.executable, "-m", "agent.cli.main", "dataset", "synth", str(tmp_path / "d")],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "is not empty" in again.stderr and "Traceback" not in again.stderr
