"""Reading YOLO-format datasets: both ways in, pixels, clear errors; a fake detector end to end."""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest

from agent.capture.synthetic import DEFECT_CLASSES
from agent.core.detections import Detection, PrefilterResult
from agent.errors import DatasetError
from agent.tooling.dataset.synth import write_synthetic_dataset
from agent.tooling.evaluation.dataset import evaluate_detector, image_size, read_yolo_dataset

NAMES = ("scratch", "hole")


def make_dataset(root: pathlib.Path, labels: dict[str, str], split: str = "val", size: tuple[int, int] = (64, 48),
                 suffix: str = ".jpg", data_yaml: str | None = "names: [scratch, hole]\n") -> pathlib.Path:
    """images/<split>/<stem><suffix> (size w x h) with labels/<split>/<stem>.txt holding the given text."""
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for stem, text in labels.items():
        assert cv2.imwrite(str(root / "images" / split / f"{stem}{suffix}"), np.zeros((size[1], size[0], 3), np.uint8))
        if text is not None:
            (root / "labels" / split / f"{stem}.txt").write_text(text)
    if data_yaml is not None:
        (root / "data.yaml").write_text(data_yaml)
    return root


def test_synthetic_dataset_boxes_come_back_in_pixels(tmp_path: pathlib.Path) -> None:
    data_yaml = write_synthetic_dataset(tmp_path / "ds", 1, 6, seed=1)
    for data in (tmp_path / "ds", data_yaml):  # the folder and its data.yaml
        ds = read_yolo_dataset(data)
        assert ds.names == DEFECT_CLASSES and len(ds.images) == 6 and ds.split == "val" and ds.notes == ()
        for item in ds.images:
            truth = json.loads((tmp_path / "ds" / "truth" / "val" / f"{item.path.stem}.json").read_text())
            assert (item.width, item.height) == (640, 480)
            assert [DEFECT_CLASSES[c] for c in item.classes] == [d["label"] for d in truth["defects"]]
            expected = np.array([d["box"] for d in truth["defects"]], np.float64).reshape(-1, 4)
            assert np.abs(item.boxes - expected).max(initial=0) < 0.01  # 6-decimal labels of 640 px
    assert sum(len(im.classes) for im in ds.images) == ds.object_count > 0


def test_folder_data_yaml_names_but_not_its_path(tmp_path: pathlib.Path) -> None:
    # a copied dataset: data.yaml still points at the old place; the folder's own images are read
    root = make_dataset(tmp_path / "copy", {"a": "1 0.5 0.5 0.5 0.5\n"},
                        data_yaml="path: /nowhere/else\nval: images/val\nnames: {0: scratch, 1: hole}\n")
    ds = read_yolo_dataset(root)
    assert ds.names == NAMES and ds.root == root
    assert ds.notes and "points at /nowhere/else" in ds.notes[0]
    # 0.5 +- 0.25 of 64 x 48 -> (16, 12, 48, 36)
    assert ds.images[0].classes.tolist() == [1] and ds.images[0].boxes.tolist() == [[16, 12, 48, 36]]


def test_data_yaml_with_relative_path_and_split_list(tmp_path: pathlib.Path) -> None:
    make_dataset(tmp_path / "d", {"a": "0 0.5 0.5 1 1\n", "b": ""}, split="test", data_yaml=None)
    (tmp_path / "data.yaml").write_text("path: d\ntest: [images/test]\nnames: [scratch, hole]\n")
    ds = read_yolo_dataset(tmp_path / "data.yaml", split="test")
    assert ds.notes == ()
    assert [p.path.name for p in ds.images] == ["a.jpg", "b.jpg"] and ds.images[1].classes.shape == (0,)
    assert ds.images[0].boxes.tolist() == [[0, 0, 64, 48]]


def test_folder_without_names_takes_the_model_names(tmp_path: pathlib.Path) -> None:
    root = make_dataset(tmp_path / "d", {"a": "0 0.5 0.5 0.1 0.1\n"}, data_yaml=None)
    assert read_yolo_dataset(root).names is None
    assert read_yolo_dataset(root, names=NAMES).names == NAMES


def test_missing_label_file_is_an_image_without_objects(tmp_path: pathlib.Path) -> None:
    root = make_dataset(tmp_path / "d", {"a": "0 0.5 0.5 0.1 0.1\n"})
    cv2.imwrite(str(root / "images" / "val" / "b.jpg"), np.zeros((8, 8, 3), np.uint8))
    ds = read_yolo_dataset(root)
    assert [len(im.classes) for im in ds.images] == [1, 0]


@pytest.mark.parametrize(("suffix", "size"), [(".jpg", (70, 30)), (".png", (33, 17)), (".bmp", (20, 40))])
def test_image_size_from_headers(tmp_path: pathlib.Path, suffix: str, size: tuple[int, int]) -> None:
    path = tmp_path / f"x{suffix}"
    assert cv2.imwrite(str(path), np.zeros((size[1], size[0], 3), np.uint8))
    assert image_size(path) == size


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        # four numbers instead of five
        ({"a": "0 0.5 0.5 0.1\n"}, "a.txt, line 1: expected 5 numbers 'class cx cy w h', got 4 fields"),
        # a word in the second line
        ({"a": "0 0.5 0.5 0.1 0.1\n1 0.5 x 0.1 0.1\n"}, "a.txt, line 2: expected 5 numbers"),
        # a class id beyond the two names
        ({"a": "2 0.5 0.5 0.1 0.1\n"}, "a.txt, line 1: class id 2 is out of range; the dataset has 2 classes "
                                       "(0..1: scratch, hole)"),
        # a fractional class id
        ({"a": "0.5 0.5 0.5 0.1 0.1\n"}, "class id '0.5' is not a whole number"),
        # pixel coordinates instead of normalised ones
        ({"a": "0 32 24 10 10\n"}, "is not normalised to 0..1"),
        # a polygon line (segmentation dataset)
        ({"a": "0 0.1 0.1 0.2 0.1 0.2 0.2\n"}, "segmentation polygons are not read"),
    ],
)
def test_bad_label_lines_name_the_file_and_line(tmp_path: pathlib.Path, labels: dict[str, str],
                                                message: str) -> None:
    root = make_dataset(tmp_path / "d", labels)
    with pytest.raises(DatasetError) as err:
        read_yolo_dataset(root)
    assert message in str(err.value) and str(root / "labels" / "val" / "a.txt") in str(err.value)


def test_dataset_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DatasetError, match="does not exist; expected a data.yaml or a folder with images/val/"):
        read_yolo_dataset(tmp_path / "missing")
    make_dataset(tmp_path / "t", {"a": ""}, split="train", data_yaml=None)
    with pytest.raises(DatasetError, match=r"no images/val/ folder and no data.yaml \(images/ has: train; choose "
                                           "with --split"):
        read_yolo_dataset(tmp_path / "t")
    empty = tmp_path / "e"
    (empty / "images" / "val").mkdir(parents=True)
    (empty / "labels" / "val").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images in split 'val'"):
        read_yolo_dataset(empty)
    no_labels = tmp_path / "n"
    (no_labels / "images" / "val").mkdir(parents=True)
    with pytest.raises(DatasetError, match="labels/val/ does not"):
        read_yolo_dataset(no_labels)
    make_dataset(tmp_path / "m", {"a": ""}, data_yaml="names: [dent]\n")
    with pytest.raises(DatasetError, match=r"its classes \(dent\) are not the model's \(scratch, hole\)"):
        read_yolo_dataset(tmp_path / "m", names=NAMES)
    (tmp_path / "y.yaml").write_text("path: .\ntrain: images/train\nnames: [a]\n")
    with pytest.raises(DatasetError, match="no 'val' split; it has train"):
        read_yolo_dataset(tmp_path / "y.yaml")


class FakeDetector:
    """Returns the ground truth of each image, plus one box on nothing at a low score."""

    def __init__(self, truth: dict[str, list[tuple[int, tuple[float, float, float, float]]]]) -> None:
        self.truth = truth
        self.seen: list[tuple[int, int]] = []

    def infer(self, image: np.ndarray) -> PrefilterResult:
        self.seen.append(image.shape[:2])
        key = str(len(self.seen) - 1)
        dets = [Detection(NAMES[c], c, 0.9, box) for c, box in self.truth.get(key, [])]
        dets.append(Detection(NAMES[0], 0, 0.05, (0.0, 0.0, 2.0, 2.0)))
        return PrefilterResult("fake@0", tuple(dets), 1.0)


def test_evaluate_detector_with_a_fake_detector(tmp_path: pathlib.Path) -> None:
    root = make_dataset(tmp_path / "d", {"0": "0 0.5 0.5 0.5 0.5\n", "1": "1 0.25 0.25 0.25 0.25\n"})
    fake = FakeDetector({"0": [(0, (16.0, 12.0, 48.0, 36.0))], "1": [(1, (8.0, 6.0, 24.0, 18.0))]})
    progress: list[tuple[int, int]] = []
    m = evaluate_detector(fake, read_yolo_dataset(root), NAMES, lambda done, total: progress.append((done, total)))
    assert fake.seen == [(48, 64), (48, 64)] and progress == [(1, 2), (2, 2)]
    # each class: its one object found first, then a stray box -> AP 0.995 (see test_detection)
    assert m.map50 == pytest.approx(0.995) and m.map50_95 == pytest.approx(0.995)
    assert [c.gt_count for c in m.classes] == [1, 1]


def test_undecodable_image_is_a_dataset_error(tmp_path: pathlib.Path) -> None:
    root = make_dataset(tmp_path / "d", {"a": ""})
    (root / "images" / "val" / "a.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    with pytest.raises(DatasetError, match="a.jpg: not a readable JPEG, PNG or BMP file"):
        read_yolo_dataset(root)


def test_data_yaml_pointing_elsewhere_is_followed_with_a_note(tmp_path: pathlib.Path) -> None:
    make_dataset(tmp_path / "other", {"x": "0 0.5 0.5 0.1 0.1\n", "y": ""}, data_yaml=None)
    here = make_dataset(tmp_path / "here", {"a": ""}, data_yaml=f"path: {tmp_path / 'other'}\nval: images/val\n"
                                                              "names: [scratch, hole]\n")
    ds = read_yolo_dataset(here / "data.yaml")
    assert [im.path.stem for im in ds.images] == ["x", "y"]  # as ultralytics would read it
    assert "reading that, not the images/val/ next to the yaml" in ds.notes[0]
    assert [im.path.stem for im in read_yolo_dataset(here).images] == ["a"]  # the folder: its own images
