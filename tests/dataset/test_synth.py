"""The synthetic datasets (YOLO detection and classify folders): layout, labels that match the ground
truth, determinism, clear errors."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import cv2
import pytest
import yaml

from agent.capture.synthetic import DEFECT_CLASSES
from agent.core.frame import DefectTruth, FrameTruth
from agent.errors import DatasetError
from agent.tooling.dataset.synth import CLASSIFY_NAMES, frame_label, write_classify_dataset, write_synthetic_dataset


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


# -- the classification layout ------------------------------------------------------------------------------


def _truth(*defects: tuple[str, float]) -> FrameTruth:
    """Defects as (label, side of a square box in px)."""
    return FrameTruth(parts=((0.0, 0.0, 200.0, 200.0),), defects=tuple(
        DefectTruth(label, (10.0, 10.0, 10.0 + side, 10.0 + side), False, 0.8) for label, side in defects))


@pytest.mark.parametrize(
    ("defects", "severity", "area"),
    [
        ((), "pass", "pass"),  # nothing visible
        ((("stain", 20),), "stain", "stain"),  # one defect: both rules agree
        ((("stain", 30), ("hole", 10)), "hole", "stain"),  # a small hole beats a big stain on severity only
        ((("scratch", 12), ("scratch", 12), ("missing", 15)), "missing", "scratch"),  # 288 px^2 of scratch vs 225
        ((("hole", 10), ("scratch", 10)), "hole", "hole"),  # equal areas: the more severe class
    ],
)
def test_frame_label_rules(defects, severity: str, area: str) -> None:
    truth = _truth(*defects)
    assert frame_label(truth) == severity == frame_label(truth, "severity")
    assert frame_label(truth, "area") == area


def test_classify_layout_truth_and_determinism(tmp_path: pathlib.Path) -> None:
    seen: list[tuple[str, int, int]] = []
    root = write_classify_dataset(tmp_path / "a", 8, 4, seed=3,
                                  progress=lambda split, done, total: seen.append((split, done, total)))
    assert seen[-1] == ("val", 4, 4) and seen[7] == ("train", 8, 8)
    info = json.loads((root / "dataset.json").read_text())
    assert info["names"] == list(CLASSIFY_NAMES) == ["pass", *DEFECT_CLASSES]
    assert info["task"] == "classify" and info["label_rule"] == "severity" and info["seed"] == 3
    for split, n in (("train", 8), ("val", 4)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(CLASSIFY_NAMES)  # every class a folder
        images = sorted((root / split).glob("*/*.jpg"))
        assert len(images) == n == sum(info["counts"][split].values())
        lines = [json.loads(x) for x in (root / "truth" / f"{split}.jsonl").read_text().splitlines()]
        assert sorted(doc["file"] for doc in lines) == sorted(p.relative_to(root).as_posix() for p in images)
        for doc in lines:
            assert doc["file"].split("/")[1] == doc["label"]
            assert (doc["label"] == "pass") == (not doc["defects"])
    # same seed, same pictures and labels as the detection layout
    write_synthetic_dataset(tmp_path / "d", 8, 4, seed=3)
    again = write_classify_dataset(tmp_path / "b", 8, 4, seed=3)
    for p in sorted(root.glob("*/*/*.jpg")):
        assert (again / p.relative_to(root)).read_bytes() == p.read_bytes()
        assert (tmp_path / "d/images" / p.parts[-3] / p.name).read_bytes() == p.read_bytes()


def test_classify_writer_refuses_bad_input(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DatasetError, match="at least 1"):
        write_classify_dataset(tmp_path / "x", 0, 1)
    with pytest.raises(DatasetError, match="label rule 'biggest': expected one of severity, area"):
        write_classify_dataset(tmp_path / "x", 1, 1, rule="biggest")  # type: ignore[arg-type]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="is not empty"):
        write_classify_dataset(tmp_path / "full", 1, 1)


def test_cli_dataset_synth_classify(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "agent.cli.main", "dataset", "synth", str(tmp_path / "c"),
                           "--task", "classify", "--train", "3", "--val", "2", "--label-rule", "area"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "c") and "val: 2/2" in proc.stderr
    assert json.loads((tmp_path / "c/dataset.json").read_text())["label_rule"] == "area"
    assert len(list((tmp_path / "c/val").glob("*/*.jpg"))) == 2
    for args, message in ((["--task", "segment"], "--task 'segment': expected detect or classify"),
                          (["--task", "classify", "--label-rule", "big"], "--label-rule 'big': expected one of")):
        bad = subprocess.run([sys.executable, "-m", "agent.cli.main", "dataset", "synth", str(tmp_path / "e"), *args],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


# -- the grey surface scene ----------------------------------------------------------------------------------


def test_surface_detect_dataset_is_grey_with_its_own_classes(tmp_path: pathlib.Path) -> None:
    from agent.capture.surface import SURFACE_CLASSES

    data_yaml = write_synthetic_dataset(tmp_path / "s", 4, 2, seed=3, scene="surface")
    doc = yaml.safe_load(data_yaml.read_text())
    assert doc["names"] == dict(enumerate(SURFACE_CLASSES)) and "synthetic surface" in data_yaml.read_text()
    rows = 0
    for img in sorted((tmp_path / "s/images/train").glob("*.jpg")):
        grey = cv2.imread(str(img), cv2.IMREAD_UNCHANGED)
        assert grey.shape == (640, 640)  # a single-channel JPEG, as a mono camera's frame
        truth = json.loads((tmp_path / "s/truth/train" / img.name).with_suffix(".json").read_text())
        lines = (tmp_path / "s/labels/train" / img.name).with_suffix(".txt").read_text().splitlines()
        assert [SURFACE_CLASSES[int(x.split()[0])] for x in lines] == [d["label"] for d in truth["defects"]]
        rows += len(lines)
    assert rows > 0
    with pytest.raises(DatasetError, match="scene 'belt': expected one of conveyor, surface"):
        write_synthetic_dataset(tmp_path / "t", 1, 1, scene="belt")


def test_cli_dataset_synth_surface_classify(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "agent.cli.main", "dataset", "synth", str(tmp_path / "c"),
                           "--train", "6", "--val", "2", "--task", "classify", "--scene", "surface"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "c/dataset.json").read_text())
    assert meta["names"] == ["pass", "scratch", "pit", "stain", "crack", "inclusion", "dent"]
    assert meta["size"] == [640, 640] and sum(meta["counts"]["train"].values()) == 6
    for line in (tmp_path / "c/truth/train.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert cv2.imread(str(tmp_path / "c" / row["file"]), cv2.IMREAD_UNCHANGED).ndim == 2
    bad = subprocess.run([sys.executable, "-m", "agent.cli.main", "dataset", "synth", str(tmp_path / "x"),
                          "--scene", "belt"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--scene 'belt': expected one of conveyor, surface" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x").exists()


# -- the same ground truth as COCO JSON and Pascal VOC XML, through `dataset import` ----------------------------


def _yolo_rows(root: pathlib.Path, split: str) -> list[list[tuple[int, float, float, float, float]]]:
    """Every label file of ``split`` in image order: (class id, cx, cy, w, h) per box."""
    return [[(int(r.split()[0]), *map(float, r.split()[1:])) for r in p.read_text().splitlines()]  # type: ignore[misc]
            for p in sorted((root / "labels" / split).glob("*.txt"))]


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_surface_export_imports_to_the_ground_truth(tmp_path: pathlib.Path, fmt: str) -> None:
    """synth --format coco|voc, then `dataset import`: the same images, class names in the scene's order and
    the boxes of the YOLO labels rendered directly from the same seed."""
    from agent.capture.surface import SURFACE_CLASSES
    from agent.tooling.dataset.imports.run import ImportOptions, import_dataset

    yolo = write_synthetic_dataset(tmp_path / "yolo", 6, 3, seed=5, scene="surface").parent
    source = write_synthetic_dataset(tmp_path / fmt, 6, 3, seed=5, scene="surface", fmt=fmt)
    assert source == tmp_path / fmt and not (source / "labels").exists()
    summary = import_dataset(ImportOptions(source=source, out=tmp_path / "imported", fmt=fmt))
    assert summary.names == SURFACE_CLASSES and summary.problems == () and summary.images == {"train": 6, "val": 3}
    want_boxes = 0
    for split in ("train", "val"):
        got, want = _yolo_rows(tmp_path / "imported", split), _yolo_rows(yolo, split)
        assert len(got) == len(want)
        for got_rows, want_rows in zip(got, want, strict=True):
            assert [r[0] for r in got_rows] == [r[0] for r in want_rows]  # class ids, in the scene's order
            for g, w in zip(got_rows, want_rows, strict=True):
                assert g[1:] == pytest.approx(w[1:], abs=3e-6)  # boxes written to 0.001 px
            want_boxes += len(want_rows)
        images = sorted((tmp_path / "imported/images" / split).glob("*.jpg"))
        direct = sorted((yolo / "images" / split).glob("*.jpg"))
        assert [p.read_bytes() for p in images] == [p.read_bytes() for p in direct]  # the same grey JPEGs
    assert summary.boxes == want_boxes > 0


def test_voc_labelmap_gives_the_class_order_and_names_a_stranger(tmp_path: pathlib.Path) -> None:
    from agent.tooling.dataset.imports.run import ImportOptions, import_dataset

    voc = write_synthetic_dataset(tmp_path / "voc", 4, 2, seed=5, scene="surface", fmt="voc")
    assert (voc / "labelmap.txt").read_text().splitlines()[1] == "scratch:::"
    xml = next(p for p in sorted((voc / "Annotations").glob("*.xml")) if "<object>" in p.read_text())
    xml.write_text(xml.read_text().replace("<name>", "<name>x", 1))
    with pytest.raises(DatasetError) as info:
        import_dataset(ImportOptions(source=voc, out=tmp_path / "out", fmt="voc"))
    assert f"VOC file {xml}" in str(info.value) and "is not in" in str(info.value) and "labelmap.txt" in str(info.value)
    (voc / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n:::\n")
    with pytest.raises(DatasetError, match="VOC labelmap .*: expected one 'name:color:parts:actions' line per class"):
        import_dataset(ImportOptions(source=voc, out=tmp_path / "out", fmt="voc"))
    assert not (tmp_path / "out").exists()


def test_cli_dataset_synth_format(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "agent.cli.main", "dataset", "synth", str(tmp_path / "c"),
                           "--train", "2", "--val", "1", "--scene", "surface", "--format", "coco"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "c/annotations/instances_val.json").read_text())
    assert [c["name"] for c in doc["categories"]][:2] == ["scratch", "pit"] and len(doc["images"]) == 1
    for args, message in ((["--format", "pdf"], "format 'pdf': expected one of yolo, coco, voc"),
                          (["--format", "voc", "--task", "classify"], "--format voc: boxes are written for --task "
                                                                      "detect")):
        bad = subprocess.run([sys.executable, "-m", "agent.cli.main", "dataset", "synth", str(tmp_path / "x"), *args],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert not (tmp_path / "x").exists()
