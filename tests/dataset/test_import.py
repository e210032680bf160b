"""``dataset import``: COCO and VOC exports of the grey surface scene, made here from its ground truth,
come back with the same boxes; YOLO and CSV sources too; every bad input is named and nothing is written."""

from __future__ import annotations

import csv
import json
import pathlib
import shutil
from typing import Any

import cv2
import pytest
import yaml

from agent.capture.surface import SURFACE_CLASSES
from agent.errors import ConfigError, DatasetError
from agent.tooling.dataset.imports.run import ImportOptions, import_dataset
from agent.tooling.dataset.synth import write_classify_dataset, write_synthetic_dataset
from agent.tooling.evaluation.dataset import read_yolo_dataset
from agent.tooling.training.data import check_training_data
from tests.cli.test_models_cli import edge_agent

Truth = dict[str, list[tuple[str, tuple[float, float, float, float]]]]  # image name -> (label, pixel box)


@pytest.fixture(scope="module")
def surface(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A small detection dataset of the surface scene (grey 640x640 JPEGs) with its ground truth."""
    root = tmp_path_factory.mktemp("surface") / "ds"
    write_synthetic_dataset(root, 8, 4, seed=11, scene="surface")
    return root


def _truth(surface: pathlib.Path, split: str) -> Truth:
    out: Truth = {}
    for path in sorted((surface / "truth" / split).glob("*.json")):
        doc = json.loads(path.read_text())
        out[path.stem + ".jpg"] = [(d["label"], tuple(d["box"])) for d in doc["defects"]]
    return out


def _coco_export(surface: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """A COCO layout as labelling tools write it: annotations/instances_{train,val}.json, images/{split}/."""
    (dest / "annotations").mkdir(parents=True)
    categories = [{"id": i + 1, "name": n, "supercategory": "defect"} for i, n in enumerate(SURFACE_CLASSES)]
    ann_id = 1
    for split in ("train", "val"):
        shutil.copytree(surface / "images" / split, dest / "images" / split)
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for k, (name, boxes) in enumerate(_truth(surface, split).items(), start=1):
            images.append({"id": k, "file_name": f"{split}/{name}", "width": 640, "height": 640})
            for label, (x1, y1, x2, y2) in boxes:
                annotations.append({"id": ann_id, "image_id": k, "category_id": SURFACE_CLASSES.index(label) + 1,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "iscrowd": 0, "segmentation": []})
                ann_id += 1
        (dest / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": categories}))
    return dest


def _voc_xml(name: str, boxes: list[tuple[str, tuple[float, float, float, float]]]) -> str:
    objects = "".join(
        f"<object><name>{label}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for label, (x1, y1, x2, y2) in boxes)
    return (f"<annotation><folder>JPEGImages</folder><filename>{name}</filename><size><width>640</width>"
            f"<height>640</height><depth>1</depth></size>{objects}</annotation>")


def _voc_export(surface: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """The VOC layout: Annotations/*.xml (1-based pixel indices), JPEGImages/, ImageSets/Main/{train,val}.txt."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (dest / sub).mkdir(parents=True)
    for split in ("train", "val"):
        stems = []
        for name, boxes in _truth(surface, split).items():
            stem = f"{split}_{pathlib.Path(name).stem}"
            shutil.copyfile(surface / "images" / split / name, dest / "JPEGImages" / f"{stem}.jpg")
            (dest / "Annotations" / f"{stem}.xml").write_text(_voc_xml(f"{stem}.jpg", boxes))
            stems.append(stem)
        (dest / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return dest


def _imported_boxes(out: pathlib.Path, split: str) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    ds = read_yolo_dataset(out, split)
    assert ds.names is not None
    return {im.path.name: [(ds.names[int(c)], tuple(float(v) for v in b)) for c, b in zip(im.classes, im.boxes,
                                                                                     strict=True)]
            for im in ds.images}


def _assert_same_boxes(got: list[tuple[str, tuple[float, ...]]], want: list[tuple[str, tuple[float, ...]]]) -> None:
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, g), (_, w) in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=2e-3)  # 6 decimals of a normalised coordinate on 640 px


def test_coco_export_of_the_surface_scene_round_trips(surface: pathlib.Path, tmp_path: pathlib.Path) -> None:
    coco = _coco_export(surface, tmp_path / "coco")
    summary = import_dataset(ImportOptions(source=coco, out=tmp_path / "out", fmt="coco"))
    assert summary.task == "detect" and summary.names == SURFACE_CLASSES
    assert summary.images == {"train": 8, "val": 4} and summary.problems == ()
    for split in ("train", "val"):
        got, want = _imported_boxes(tmp_path / "out", split), _truth(surface, split)
        assert sorted(got) == sorted(want)
        for name in want:
            _assert_same_boxes(got[name], want[name])  # type: ignore[arg-type]
    copied = cv2.imread(str(next((tmp_path / "out/images/val").glob("*.jpg"))), cv2.IMREAD_UNCHANGED)
    assert copied.ndim == 2  # grey stays grey: images are copied byte for byte
    data = check_training_data(tmp_path / "out")  # what `models train` checks before training
    assert data.task == "detect" and data.names == SURFACE_CLASSES and len(data.val) == 4
    manifest = json.loads((tmp_path / "out/import.json").read_text())
    assert manifest["format"] == "coco" and manifest["boxes"] == summary.boxes > 0


def test_voc_export_of_the_surface_scene_round_trips(surface: pathlib.Path, tmp_path: pathlib.Path) -> None:
    voc = _voc_export(surface, tmp_path / "voc")
    summary = import_dataset(ImportOptions(source=voc, out=tmp_path / "out", fmt="voc"))
    present = {label for split in ("train", "val") for boxes in _truth(surface, split).values() for label, _ in boxes}
    assert summary.names == tuple(sorted(present))  # VOC has no class list: the classes found, sorted
    assert summary.images == {"train": 8, "val": 4}
    for split in ("train", "val"):
        got = _imported_boxes(tmp_path / "out", split)
        for name, boxes in _truth(surface, split).items():
            _assert_same_boxes(got[f"{split}_{name}"], boxes)  # type: ignore[arg-type]


def test_yolo_folder_and_single_coco_file_with_a_drawn_split(surface: pathlib.Path, tmp_path: pathlib.Path) -> None:
    summary = import_dataset(ImportOptions(source=surface / "data.yaml", out=tmp_path / "yolo", fmt="yolo"))
    assert summary.images == {"train": 8, "val": 4} and summary.names == SURFACE_CLASSES
    for split in ("train", "val"):
        for name, boxes in _truth(surface, split).items():
            _assert_same_boxes(_imported_boxes(tmp_path / "yolo", split)[name], boxes)  # type: ignore[arg-type]
    # one COCO file, no split of its own: --val-fraction draws one, the same for the same seed
    coco = _coco_export(surface, tmp_path / "coco")
    single = coco / "annotations" / "instances_train.json"
    first = import_dataset(ImportOptions(source=single, out=tmp_path / "a", fmt="coco", val_fraction=0.25, seed=3))
    again = import_dataset(ImportOptions(source=single, out=tmp_path / "b", fmt="coco", val_fraction=0.25, seed=3))
    assert first.images == again.images == {"train": 6, "val": 2}
    assert sorted(p.name for p in (tmp_path / "a/images/val").iterdir()) == \
        sorted(p.name for p in (tmp_path / "b/images/val").iterdir())


# -- bad input: each named, nothing written ----------------------------------------------------------------------


def _edit_coco(coco: pathlib.Path, edit: Any) -> None:
    path = coco / "annotations" / "instances_val.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _first_boxed(doc: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in doc["annotations"])


COCO_CASES = [
    # an image the JSON lists is not on disk
    (lambda doc: doc["images"][0].update(file_name="val/gone.jpg"), "image file", "gone.jpg does not exist"),
    # a box that reaches past the image's right edge
    (lambda doc: _first_boxed(doc).update(bbox=[600.0, 10.0, 80.0, 20.0]), "lies outside the 640x640 image",
     "box (600, 10, 680, 30)"),
    # a category id the file does not define
    (lambda doc: _first_boxed(doc).update(category_id=42), "unknown category id 42",
     "the file's categories are 1 scratch, 2 pit"),
    # a zero-area box
    (lambda doc: _first_boxed(doc).update(bbox=[10.0, 10.0, 0.0, 5.0]), "zero or negative area", "annotation id"),
    # the size the JSON states is not the file's
    (lambda doc: doc["images"][0].update(width=800), "the annotation says 800x640 pixels", "is 640x640"),
    # a box that is not four numbers
    (lambda doc: _first_boxed(doc).update(bbox=[1, 2, 3]), "annotations[0].bbox", "at least 4 items"),
    # an annotation of an image the file does not list
    (lambda doc: _first_boxed(doc).update(image_id=999), "refers to image id 999", "does not list"),
]


@pytest.mark.parametrize(("edit", "message", "detail"), COCO_CASES)
def test_bad_coco_input_is_named_and_nothing_is_written(surface: pathlib.Path, tmp_path: pathlib.Path, edit: Any,
                                                        message: str, detail: str) -> None:
    coco = _coco_export(surface, tmp_path / "coco")
    _edit_coco(coco, edit)
    with pytest.raises(DatasetError) as info:
        import_dataset(ImportOptions(source=coco, out=tmp_path / "out", fmt="coco"))
    text = str(info.value)
    assert message in text and detail in text and "nothing was written" in text and "--skip-bad" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]  # no OUT, no half-written sibling
    # with --skip-bad the bad image is left out and counted, the rest imported
    summary = import_dataset(ImportOptions(source=coco, out=tmp_path / "out", fmt="coco", skip_bad=True))
    assert len(summary.problems) == 1 and message in summary.problems[0]
    assert summary.skipped_images == (0 if "refers to image id" in message else 1)
    assert summary.images["train"] == 8 and summary.images["val"] == 4 - summary.skipped_images
    assert json.loads((tmp_path / "out/import.json").read_text())["problems"] == list(summary.problems)


def test_broken_files_of_every_format(surface: pathlib.Path, tmp_path: pathlib.Path) -> None:
    coco = _coco_export(surface, tmp_path / "coco")
    (coco / "annotations" / "instances_val.json").write_text('{"images": [}')
    with pytest.raises(DatasetError, match=r"instances_val.json: not valid JSON: .* at line 1, column 13"):
        import_dataset(ImportOptions(source=coco, out=tmp_path / "o1", fmt="coco"))
    voc = _voc_export(surface, tmp_path / "voc")
    broken = sorted((voc / "Annotations").glob("*.xml"))[0]
    broken.write_text("<annotation><filename>x.jpg</filename><object>")
    bomb = sorted((voc / "Annotations").glob("*.xml"))[1]
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "lol">]><annotation>&e;</annotation>')
    no_box = sorted((voc / "Annotations").glob("*.xml"))[2]
    no_box.write_text(no_box.read_text().replace("<xmax>", "<xmaxx>").replace("</xmax>", "</xmaxx>")
                      if "<xmax>" in no_box.read_text() else
                      "<annotation><filename>x.jpg</filename><object><name>pit</name></object></annotation>")
    with pytest.raises(DatasetError) as info:
        import_dataset(ImportOptions(source=voc, out=tmp_path / "o2", fmt="voc"))
    text = str(info.value)
    assert f"VOC file {broken}: broken XML (" in text and "expected a Pascal VOC <annotation> file" in text
    assert f"VOC file {bomb}: refused, it uses XML entities or a DTD" in text
    assert f"VOC file {no_box}, object 1 (" in text and "needs numeric xmin, ymin, xmax and ymax" in text
    assert "3 problem(s)" in text and not (tmp_path / "o2").exists()
    # a damaged image file is named too
    image = sorted((voc / "JPEGImages").glob("*.jpg"))[5]
    image.write_bytes(image.read_bytes()[:40])
    summary = import_dataset(ImportOptions(source=voc, out=tmp_path / "o3", fmt="voc", skip_bad=True))
    assert summary.skipped_images == 4 and any(f"image file {image} cannot be decoded" in p for p in summary.problems)
    # a bad YOLO label line names its file and line
    label = sorted((surface / "labels" / "train").glob("*.txt"))[0]
    yolo = tmp_path / "yolo"
    shutil.copytree(surface, yolo)
    (yolo / "data.yaml").write_text((yolo / "data.yaml").read_text().replace(f"path: {surface}", "path: ."))
    (yolo / "labels/train" / label.name).write_text("9 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=rf"label file .*{label.name}, line 1: class id 9 is out of range"):
        import_dataset(ImportOptions(source=yolo, out=tmp_path / "o4", fmt="yolo"))


# -- image-level labels (CSV) and the taxonomy ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def surface_classes(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_classify_dataset(tmp_path_factory.mktemp("cls") / "c", 8, 2, seed=5, scene="surface")


def _csv(root: pathlib.Path, rows: list[list[str]], header: tuple[str, ...] = ("Image", "Label")) -> pathlib.Path:
    path = root / "labels.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _rows(classes: pathlib.Path) -> list[list[str]]:
    rows = []
    for line in (classes / "truth" / "train.jsonl").read_text().splitlines():
        doc = json.loads(line)
        rows.append([doc["file"], doc["label"]])
    return rows


def test_csv_of_image_level_labels(surface_classes: pathlib.Path, tmp_path: pathlib.Path) -> None:
    rows = _rows(surface_classes)
    summary = import_dataset(ImportOptions(source=_csv(surface_classes, rows), out=tmp_path / "out", fmt="csv",
                                           val_fraction=0.25))
    labels = sorted({r[1] for r in rows})
    assert summary.task == "classify" and summary.images == {"train": 6, "val": 2}
    assert summary.names[0] == "pass" if "pass" in labels else summary.names == tuple(labels)
    assert set(summary.names) == set(labels)
    meta = json.loads((tmp_path / "out/dataset.json").read_text())
    assert meta == {"task": "classify", "names": list(summary.names)}
    for file, label in rows:  # every image lands in its class folder
        assert len(list((tmp_path / "out").glob(f"*/{label}/{pathlib.Path(file).name}"))) == 1
    data = check_training_data(tmp_path / "out")
    assert data.task == "classify" and len(data.train) + len(data.val) == 8


def test_bad_csv_lines_are_named(surface_classes: pathlib.Path, tmp_path: pathlib.Path) -> None:
    rows = _rows(surface_classes)
    bad = [*rows, ["train/pass/missing.jpg", "pass"], [rows[0][0], "crack"], ["a.jpg", "pit", "extra"],
           [rows[1][0], ""]]
    path = _csv(surface_classes, bad)
    with pytest.raises(DatasetError) as info:
        import_dataset(ImportOptions(source=path, out=tmp_path / "out", fmt="csv"))
    text = str(info.value)
    n = len(rows) + 1
    assert f"line {n + 1} (train/pass/missing.jpg): image file" in text and "missing.jpg does not exist" in text
    assert f"line {n + 2} ({rows[0][0]}): {rows[0][0]} is listed twice (first at line 2)" in text
    assert f"line {n + 3}: 3 fields, the header has 2" in text
    assert f"line {n + 4} ({rows[1][0]}): the Label field is empty" in text
    assert not (tmp_path / "out").exists()
    with pytest.raises(DatasetError, match=r"no label column in the header row \(Image, Kind\); expected one of label"):
        import_dataset(ImportOptions(source=_csv(tmp_path, [], ("Image", "Kind")), out=tmp_path / "o", fmt="csv"))


TAXONOMY = """\
version: 1
labels:
  - {label: SURFACE_SCRATCH, code: S-1, severity: low, synonyms: [scratch, scrape]}
  - {label: PIT, code: S-2, severity: medium, synonyms: [pits]}
  - {label: STAIN, code: S-3, severity: low, synonyms: [stain]}
  - {label: CRACK, code: S-4, severity: critical, synonyms: [crack]}
  - {label: INCLUSION, code: S-5, severity: high, synonyms: [inclusion]}
  - {label: DENT, code: S-6, severity: medium, synonyms: [dent]}
"""


def test_class_names_go_through_the_taxonomy(surface: pathlib.Path, tmp_path: pathlib.Path) -> None:
    taxonomy = tmp_path / "taxonomy.yaml"
    taxonomy.write_text(TAXONOMY)
    summary = import_dataset(ImportOptions(source=surface, out=tmp_path / "out", fmt="yolo", taxonomy=taxonomy))
    # 'pit' matches the label PIT itself (case does not matter), the others a synonym
    assert summary.names == ("SURFACE_SCRATCH", "PIT", "STAIN", "CRACK", "INCLUSION", "DENT")
    assert summary.renamed == {"scratch": "SURFACE_SCRATCH", "pit": "PIT", "stain": "STAIN", "crack": "CRACK",
                               "inclusion": "INCLUSION", "dent": "DENT"}
    assert yaml.safe_load((tmp_path / "out/data.yaml").read_text())["names"][0] == "SURFACE_SCRATCH"
    # a class the taxonomy does not know
    taxonomy.write_text(TAXONOMY.replace("{label: DENT, code: S-6, severity: medium, synonyms: [dent]}",
                                         "{label: DING, code: S-6, severity: medium}"))
    with pytest.raises(DatasetError, match=r"class\(es\) 'dent' are not in the taxonomy .*add them to it"):
        import_dataset(ImportOptions(source=surface, out=tmp_path / "o2", fmt="yolo", taxonomy=taxonomy))
    # two classes that are one label of the taxonomy
    taxonomy.write_text(TAXONOMY.replace("synonyms: [stain]", "synonyms: [stain, dent]").replace(
        "{label: DENT, code: S-6, severity: medium, synonyms: [dent]}", "{label: DING, code: S-6, severity: low}"))
    with pytest.raises(DatasetError, match="classes 'stain' and 'dent' both map to 'STAIN'"):
        import_dataset(ImportOptions(source=surface, out=tmp_path / "o3", fmt="yolo", taxonomy=taxonomy))
    taxonomy.write_text("version: 1\nlabels: []\n")
    with pytest.raises(ConfigError, match="labels"):
        import_dataset(ImportOptions(source=surface, out=tmp_path / "o4", fmt="yolo", taxonomy=taxonomy))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "taxonomy.yaml"]


def test_cli_import_and_its_errors(surface: pathlib.Path, tmp_path: pathlib.Path) -> None:
    coco = _coco_export(surface, tmp_path / "coco")
    proc = edge_agent("dataset", "import", str(coco), "--format", "coco", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "detection (YOLO layout) dataset in" in proc.stdout and "train 8, val 4 images" in proc.stdout
    _edit_coco(coco, lambda doc: _first_boxed(doc).update(category_id=7))
    bad = edge_agent("dataset", "import", str(coco), "--format", "coco", "--out", str(tmp_path / "o2"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("edge-agent: error: coco source") and "unknown category id 7" in bad.stderr
    again = edge_agent("dataset", "import", str(coco), "--format", "coco", "--out", str(tmp_path / "out"))
    assert again.returncode == 2 and "exists and is not an empty folder" in again.stderr
    fmt = edge_agent("dataset", "import", str(coco), "--format", "labelme", "--out", str(tmp_path / "o3"))
    assert fmt.returncode == 2 and "--format 'labelme': expected one of coco, voc, yolo, csv" in fmt.stderr
    skip = edge_agent("dataset", "import", str(coco), "--format", "coco", "--out", str(tmp_path / "o4"), "--skip-bad")
    assert skip.returncode == 0 and "1 image(s) skipped, 1 problem(s)" in skip.stdout, skip.stdout



def test_flat_layouts_labelling_tools_write(surface: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # LabelImg/CVAT style: images with their .xml (VOC) or .txt + classes.txt (YOLO) side by side, no split
    voc, yolo = tmp_path / "voc", tmp_path / "yolo"
    voc.mkdir()
    yolo.mkdir()
    (yolo / "classes.txt").write_text("\n".join(SURFACE_CLASSES) + "\n")
    truth = _truth(surface, "train")
    for name, boxes in truth.items():
        shutil.copyfile(surface / "images/train" / name, voc / name)
        (voc / name).with_suffix(".xml").write_text(_voc_xml(name, boxes))
        shutil.copyfile(surface / "images/train" / name, yolo / name)
        shutil.copyfile((surface / "labels/train" / name).with_suffix(".txt"), (yolo / name).with_suffix(".txt"))
    for fmt, source in (("voc", voc), ("yolo", yolo)):
        out = tmp_path / f"out-{fmt}"
        summary = import_dataset(ImportOptions(source=source, out=out, fmt=fmt, val_fraction=0.25, seed=1))
        assert summary.images == {"train": 6, "val": 2}, fmt
        got = {**_imported_boxes(out, "train"), **_imported_boxes(out, "val")}
        for name, boxes in truth.items():
            _assert_same_boxes(got[name], boxes)  # type: ignore[arg-type]


def test_csv_with_a_split_column(surface_classes: pathlib.Path, tmp_path: pathlib.Path) -> None:
    rows = [[f, label, "val" if i < 3 else "train"] for i, (f, label) in enumerate(_rows(surface_classes))]
    path = _csv(surface_classes, rows, ("file", "class", "split"))
    summary = import_dataset(ImportOptions(source=path, out=tmp_path / "out", fmt="csv"))
    assert summary.images == {"train": 5, "val": 3}
    rows[0][2] = "holdout"
    with pytest.raises(DatasetError, match="split 'holdout'; expected train or val"):
        import_dataset(ImportOptions(source=_csv(surface_classes, rows, ("file", "class", "split")),
                                     out=tmp_path / "o2", fmt="csv"))
