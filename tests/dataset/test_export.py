"""`edge-agent dataset export`: the three formats read back, the split by time, the review file, bad input."""

from __future__ import annotations

import csv
import json
import pathlib
import random
from collections.abc import Sequence

import numpy as np
import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.core.detections import Detection
from agent.core.event import TagEvent
from agent.core.inspection import Inspection
from agent.dataset.record import DatasetRecord
from agent.dataset.recorder import ModelRef
from agent.errors import DatasetError
from agent.tooling.dataset.export import ExportOptions, export_dataset
from agent.tooling.dataset.labels import label_frame
from agent.tooling.dataset.split import TimedItem, assign_splits, time_groups
from agent.tooling.evaluation.classify_dataset import read_classify_dataset
from agent.tooling.evaluation.dataset import read_yolo_dataset
from tests.dataset.recording import MODEL, NAMES, answered, det, inspection, write_recording

A, B = (10, 10, 50, 40), (60, 20, 90, 60)
# (seconds, detections, VLM verdict and classes; None: a confident sample). Four runs of frames, 10 s apart.
Frames = Sequence[tuple[float, list[Detection], tuple[str, list[str]] | None]]
FRAMES: Frames = [
    (0.0, [det("scratch", 0.4, A)], ("defect", ["scratch"])),  # confirmed
    (0.5, [det("stain", 0.4, A)], ("defect", ["hole"])),  # relabelled
    (1.0, [det("scratch", 0.4, A)], ("pass", [])),  # background, disagrees
    (10.0, [det("scratch", 0.4, A)], ("defect", ["scratch", "missing"])),  # missing has no box: left out
    (10.5, [det("hole", 0.9, B)], None),  # confident sample
    (20.0, [det("stain", 0.4, A), det("scratch", 0.1, B)], ("defect", ["stain"])),  # scratch dropped
    (20.5, [det("hole", 0.35, B)], ("uncertain", [])),  # left out
    (21.0, [], None),  # confident pass sample
    (30.0, [det("missing", 0.5, A)], ("defect", ["missing"])),
    (30.4, [det("missing", 0.45, A)], ("defect", ["missing"])),
]


def recording(root: pathlib.Path, frames: Frames = FRAMES,
              model: ModelRef = MODEL, camera: str = "belt", first: int = 1) -> list[DatasetRecord]:
    items: list[tuple[Inspection, TagEvent | None]] = []
    for seq, (seconds, dets, vlm) in enumerate(frames, start=first):
        insp = inspection(dets, sequence=seq, seconds=seconds, camera=camera, model_id=model.model_id)
        items.append((insp, answered(insp.event, vlm[0], vlm[1]) if vlm else None))
    return write_recording(root, items, model)


def export(src: pathlib.Path, out: pathlib.Path, fmt: str = "yolo", **kw: object) -> object:
    return export_dataset(ExportOptions(source=src, out=out, fmt=fmt, **kw))  # type: ignore[arg-type]


def test_yolo_export_reads_back_with_the_labels_of_the_rule(tmp_path: pathlib.Path) -> None:
    records = recording(tmp_path / "rec")
    seen: list[tuple[int, int]] = []
    summary = export_dataset(ExportOptions(tmp_path / "rec", tmp_path / "out", "yolo", val_fraction=0.25),
                             progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (10, 10) and len(seen) == 10
    expected = {r.id: label_frame(r) for r in records}
    kept = {rid for rid, label in expected.items() if label.box_action != "excluded"}
    assert len(kept) == 8 and summary.excluded == 2
    read = {}
    for split in ("train", "val"):
        dataset = read_yolo_dataset(tmp_path / "out" / "data.yaml", split)
        assert dataset.names == NAMES
        read.update({im.path.stem: im for im in dataset.images})
    assert set(read) == kept
    for rid, image in read.items():
        label = expected[rid]
        assert image.classes.tolist() == [b.class_id for b in label.boxes]
        np.testing.assert_allclose(image.boxes, np.array([b.box for b in label.boxes]).reshape(-1, 4), atol=0.01)
    assert summary.images == {"train": 6, "val": 2}  # whole runs: the 30 s run went to val
    assert summary.boxes == 6 and summary.background == 2


@pytest.mark.train
def test_ultralytics_reads_the_yolo_data_yaml(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("ultralytics", reason="the train extra is not installed")
    from ultralytics.data.utils import check_det_dataset

    recording(tmp_path / "rec")
    export(tmp_path / "rec", tmp_path / "out")
    data = check_det_dataset(str(tmp_path / "out" / "data.yaml"))
    assert data["nc"] == 4 and data["names"] == dict(enumerate(NAMES))
    assert pathlib.Path(data["train"]) == tmp_path / "out" / "images" / "train"


def test_coco_export_is_a_standard_instances_file(tmp_path: pathlib.Path) -> None:
    records = recording(tmp_path / "rec")
    export(tmp_path / "rec", tmp_path / "out", "coco")
    expected = {r.id: label_frame(r) for r in records}
    images = 0
    for split in ("train", "val"):
        doc = json.loads((tmp_path / "out" / "annotations" / f"instances_{split}.json").read_text())
        assert set(doc) >= {"images", "annotations", "categories"}
        assert doc["categories"] == [{"id": i + 1, "name": n, "supercategory": "defect"} for i, n in enumerate(NAMES)]
        by_id = {im["id"]: im for im in doc["images"]}
        assert len(by_id) == len(doc["images"])
        images += len(by_id)
        for im in doc["images"]:
            assert (tmp_path / "out" / "images" / im["file_name"]).is_file()
            assert (im["width"], im["height"]) == (160, 120)
        ann_ids = [a["id"] for a in doc["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids)
        for ann in doc["annotations"]:
            image = by_id[ann["image_id"]]
            label = expected[pathlib.Path(image["file_name"]).stem]
            x, y, w, h = ann["bbox"]
            assert any(b.class_id + 1 == ann["category_id"] and np.allclose(b.box, (x, y, x + w, y + h), atol=0.01)
                       for b in label.boxes)
            assert ann["area"] == pytest.approx(w * h, abs=0.05) and ann["iscrowd"] == 0
    assert images == 8


def test_imagefolder_export_puts_each_frame_under_one_class(tmp_path: pathlib.Path) -> None:
    recording(tmp_path / "rec")
    summary = export(tmp_path / "rec", tmp_path / "out", "imagefolder")
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(("pass", *NAMES))
    classes = {p.stem: p.parent.name for p in out.glob("*/*/*.jpg")}
    # by capture time: scratch, hole (relabelled), pass, scratch (missing named too: the most confident), hole
    # (confident), stain, (uncertain: left out), pass (confident), missing, missing
    assert [classes[k] for k in sorted(classes)] == [
        "scratch", "hole", "pass", "scratch", "hole", "stain", "pass", "missing", "missing"]
    assert json.loads((out / "dataset.json").read_text())["names"] == ["pass", *NAMES]
    train = read_classify_dataset(out, "train")  # what `models eval` and the classifier trainer read
    assert train.names == ("pass", *NAMES) and len(train.images) == summary.images["train"]  # type: ignore[attr-defined]
    assert summary.excluded == 1  # type: ignore[attr-defined]


def test_the_review_file_lists_every_disagreement_and_what_was_done(tmp_path: pathlib.Path) -> None:
    recording(tmp_path / "rec")
    export(tmp_path / "rec", tmp_path / "out")
    with (tmp_path / "out" / "review.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_seq = {int(r["sequence"]): r for r in rows}
    # 1 and 9, 10 agree; 5 and 8 are confident samples
    assert sorted(by_seq) == [2, 3, 4, 6, 7]
    assert by_seq[2]["detection"] == "boxes" and "relabelled the prefilter's stain (0.40) as hole" in by_seq[2]["notes"]
    assert by_seq[3]["detection"] == "background" and by_seq[3]["vlm_verdict"] == "pass"
    assert by_seq[4]["detection"] == "excluded" and "no box for missing" in by_seq[4]["notes"]
    assert by_seq[6]["detection"] == "boxes" and "dropped 1 other detection(s)" in by_seq[6]["notes"]
    assert by_seq[7]["detection"] == "excluded" and by_seq[7]["image_class"] == "left out"
    assert by_seq[2]["prefilter"] == "stain 0.40" and by_seq[2]["vlm_classes"] == "hole"


def test_near_identical_frames_never_straddle_the_split() -> None:
    rng = random.Random(5)
    for trial in range(200):
        items = [TimedItem(rng.choice("ab"), rng.uniform(0, 120)) for _ in range(rng.randint(1, 60))]
        gap = rng.choice([0.5, 2.0, 5.0])
        splits = assign_splits(time_groups(items, gap), rng.choice([0.1, 0.2, 0.5]), seed=trial)
        assert set(splits) == set(range(len(items)))
        for i, x in enumerate(items):
            for j, y in enumerate(items):
                if x.key == y.key and abs(x.seconds - y.seconds) < gap:
                    assert splits[i] == splits[j], (trial, x, y)


def test_the_val_share_comes_close_to_the_fraction_with_whole_groups() -> None:
    items = [TimedItem("cam", 10.0 * g + 0.1 * k) for g in range(20) for k in range(5)]  # 20 runs of 5
    splits = assign_splits(time_groups(items, 2.0), 0.2, seed=3)
    assert list(splits.values()).count("val") == 20
    assert assign_splits(time_groups(items, 2.0), 0.2, seed=3) == splits  # same seed, same split


def test_one_unbroken_run_without_blocks_leaves_val_empty_with_a_warning(tmp_path: pathlib.Path) -> None:
    recording(tmp_path / "rec")
    summary = export(tmp_path / "rec", tmp_path / "out", split_gap_s=60.0, split_block_s=0.0)
    assert summary.images["val"] == 0  # type: ignore[attr-defined]
    assert "val is empty" in summary.warnings[0]  # type: ignore[attr-defined]
    assert "lower --split-gap or --split-block" in summary.warnings[0]  # type: ignore[attr-defined]


def test_an_unbroken_run_is_cut_into_blocks_that_val_can_take() -> None:
    """A learn-mode camera sampling one frame a second for 10 minutes, with no gap: with blocks of 30 s it forms
    20 groups and val gets about its fifth; frames of one block stay together."""
    items = [TimedItem("cam", float(t)) for t in range(600)]
    assert len(time_groups(items, 2.0)) == 1  # no blocks: one group, val impossible
    groups = time_groups(items, 2.0, block_s=30.0)
    assert [len(g) for g in groups] == [30] * 20
    splits = assign_splits(groups, 0.2, seed=1)
    assert list(splits.values()).count("val") == 120
    for g in groups:
        assert len({splits[i] for i in g}) == 1
    # a gap still starts a group, and the block counts from the group's first frame
    gapped = [TimedItem("cam", t) for t in (0.0, 1.0, 10.0, 11.0, 38.0, 41.0)]
    assert time_groups(gapped, 5.0, block_s=30.0) == [[0, 1], [2, 3], [4, 5]]
    steady = [TimedItem("cam", 4.0 * k) for k in range(6)]  # 0, 4, ... 20 s: no gap of 5 s
    assert time_groups(steady, 5.0, block_s=10.0) == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="block_s: expected 0"):
        time_groups(items, 2.0, block_s=-1.0)


# -- bad input --------------------------------------------------------------------------------------------


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["dataset", "export", *args])
    return result.exit_code, result.output


def test_no_recorded_frames_says_how_to_record(tmp_path: pathlib.Path) -> None:
    (tmp_path / "rec" / "records").mkdir(parents=True)
    code, output = cli("--from", str(tmp_path / "rec"), "--out", str(tmp_path / "out"))
    assert code == 2 and f"no recorded frames in {tmp_path / 'rec'}" in output and "record: true" in output
    assert "Traceback" not in output and not (tmp_path / "out").exists()


def test_a_folder_that_is_not_empty_is_refused_and_an_earlier_export_replaced_with_overwrite(
        tmp_path: pathlib.Path) -> None:
    recording(tmp_path / "rec")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    code, output = cli("--from", str(tmp_path / "rec"), "--out", str(tmp_path / "mine"))
    assert code == 2 and "is not empty" in output and "--overwrite" in output
    code, output = cli("--from", str(tmp_path / "rec"), "--out", str(tmp_path / "mine"), "--overwrite")
    assert code == 2 and "not an earlier export" in output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert cli("--from", str(tmp_path / "rec"), "--out", str(tmp_path / "out"))[0] == 0
    code, output = cli("--from", str(tmp_path / "rec"), "--out", str(tmp_path / "out"), "--format", "coco",
                       "--overwrite")
    assert code == 0, output
    assert (tmp_path / "out" / "annotations").is_dir() and not (tmp_path / "out" / "labels").exists()
    assert "coco dataset in" in output and "row(s) to review" in output


def test_models_with_different_classes_are_refused_unless_one_is_chosen(tmp_path: pathlib.Path) -> None:
    recording(tmp_path / "rec")
    other = ModelRef("retrained@fedcba987654", None, "detect", ("scratch", "hole"))
    recording(tmp_path / "rec", [(100.0, [], ("pass", [])), (100.5, [], ("pass", []))], model=other, first=50)
    code, output = cli("--from", str(tmp_path / "rec"), "--out", str(tmp_path / "out"))
    assert code == 2 and "recorded by models with different classes" in output
    assert f"{MODEL.model_id} (10 frames): detect, classes scratch, hole, stain, missing" in output
    assert "retrained@fedcba987654 (2 frames): detect, classes scratch, hole" in output
    summary = export(tmp_path / "rec", tmp_path / "out", model="retrained@fedcba987654")
    assert summary.names == ("scratch", "hole") and summary.other_models == 10  # type: ignore[attr-defined]
    assert sum(summary.images.values()) == 2  # type: ignore[attr-defined]


def test_broken_records_are_skipped_counted_and_listed(tmp_path: pathlib.Path) -> None:
    records = recording(tmp_path / "rec")
    folder = tmp_path / "rec" / "records"
    (folder / records[0].image).unlink()  # its JPEG is gone
    (folder / f"{records[1].id}.json").write_text("{not json")
    doc = json.loads((folder / f"{records[2].id}.json").read_text())
    doc["frame"]["width"] = "wide"
    (folder / f"{records[2].id}.json").write_text(json.dumps(doc))
    (folder / records[4].image).write_bytes(b"not a jpeg")
    summary = export(tmp_path / "rec", tmp_path / "out")
    skipped = dict(summary.skipped)  # type: ignore[attr-defined]
    assert len(skipped) == 4
    assert "cannot read it" in skipped[f"{records[0].id}.json"]
    assert "not readable JSON" in skipped[f"{records[1].id}.json"]
    assert "frame.width: expected an integer" in skipped[f"{records[2].id}.json"]
    assert "not a readable JPEG" in skipped[f"{records[4].id}.json"]
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert len(manifest["skipped"]) == 4
    assert sum(summary.images.values()) == 4  # type: ignore[attr-defined]  # 6 left, 2 of them left out by the rule


def test_a_classifier_recording_exports_to_imagefolder_only(tmp_path: pathlib.Path) -> None:
    classifier = ModelRef("frames@00aa00aa00aa", None, "classify", ("pass", *NAMES))
    recording(tmp_path / "rec", [(0.0, [], ("defect", ["stain"]))], model=classifier)
    with pytest.raises(DatasetError, match="classify model: its frames have no boxes; export them with --format "
                                           "imagefolder"):
        export(tmp_path / "rec", tmp_path / "out")
    export(tmp_path / "rec", tmp_path / "out", "imagefolder")
    assert [p.parent.name for p in (tmp_path / "out").glob("*/*/*.jpg")] == ["stain"]


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "voc"], "--format 'voc': expected one of yolo, coco, imagefolder"),
    (["--val-fraction", "1.5"], "--val-fraction 1.5: expected 0 <= fraction < 1"),
    (["--split-gap", "-1"], "--split-gap -1.0: expected 0 or more seconds"),
    (["--split-block", "-5"], "--split-block -5.0: expected 0 (no blocks) or more seconds"),
])
def test_bad_options_are_named(tmp_path: pathlib.Path, args: list[str], message: str) -> None:
    recording(tmp_path / "rec")
    code, output = cli("--from", str(tmp_path / "rec"), "--out", str(tmp_path / "out"), *args)
    assert code == 2 and message in output


def test_a_frame_evicted_by_the_running_agent_during_the_export_is_skipped(tmp_path: pathlib.Path) -> None:
    records = recording(tmp_path / "rec")
    folder = tmp_path / "rec" / "records"

    def evict_the_next(done: int, total: int) -> None:
        if done == 1:  # the agent's bounds delete the second-oldest frame while the export runs
            (folder / f"{records[1].id}.json").unlink()
            (folder / records[1].image).unlink()

    summary = export_dataset(ExportOptions(tmp_path / "rec", tmp_path / "out", "yolo"), progress=evict_the_next)
    assert [f for f, _ in summary.skipped] == [f"{records[1].id}.json"]
    assert "went away during the export" in summary.skipped[0][1]
    assert sum(summary.images.values()) == 7 and summary.excluded == 2


# --------------------------------------------------------------------------- hostile records


def test_a_record_id_that_climbs_out_of_the_folders_is_skipped_not_followed(tmp_path: pathlib.Path) -> None:
    records = recording(tmp_path / "a" / "rec")
    folder = tmp_path / "a" / "rec" / "records"
    # records/../../../x is tmp_path/x: a readable JPEG of the right size is waiting there
    (tmp_path / "x.jpg").write_bytes((folder / records[0].image).read_bytes())
    doc = json.loads((folder / f"{records[0].id}.json").read_text())
    doc["id"], doc["image"] = "../../../x", "../../../x.jpg"
    (folder / f"{records[0].id}.json").write_text(json.dumps(doc))
    summary = export(tmp_path / "a" / "rec", tmp_path / "a" / "out")
    skipped = dict(summary.skipped)  # type: ignore[attr-defined]
    assert "id: expected a file name stem" in skipped[f"{records[0].id}.json"]
    # nothing was written beside --out (images/train/../../../x.jpg would be tmp_path/a/x.jpg)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["out", "rec"]
    assert sum(summary.images.values()) == 7  # type: ignore[attr-defined]  # 9 left, 2 left out by the rule


@pytest.mark.parametrize("name", [
    "../evil",  # a path out of OUT/<split>/
    "..",  # the split folder itself
    "a/b",  # a sub-folder
    "bad\nname",  # a control character
])
def test_imagefolder_refuses_a_class_name_that_is_no_folder_name(tmp_path: pathlib.Path, name: str) -> None:
    classifier = ModelRef("frames@00aa00aa00aa", None, "classify", ("pass", name))
    recording(tmp_path / "rec", [(0.0, [], ("defect", [name]))], model=classifier)
    with pytest.raises(DatasetError, match=r"--format imagefolder: the model's class .* a class name becomes a "
                                           "folder name; export as yolo or coco, or rename the class"):
        export(tmp_path / "rec", tmp_path / "out", "imagefolder")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists()


def test_class_names_are_quoted_in_the_yolo_data_yaml(tmp_path: pathlib.Path) -> None:
    import yaml

    names = ("no: defect", "#1 scratch", "[dent]", "yes", "a\nb: c")  # YAML would read each as something else
    model = ModelRef("odd@0123456789ab", None, "detect", names)
    box = Detection("no: defect", 0, 0.4, (10, 10, 50, 40))
    recording(tmp_path / "rec", [(0.0, [box], ("defect", ["no: defect"]))], model=model)
    export(tmp_path / "rec", tmp_path / "out")
    doc = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert doc["names"] == dict(enumerate(names))
    assert doc["path"] == str((tmp_path / "out").resolve())


def test_the_review_file_has_no_cell_a_spreadsheet_would_run(tmp_path: pathlib.Path) -> None:
    names = ("=HYPERLINK(\"http://x.example\")", "@SUM(1)")  # class names come from a model's metadata
    model = ModelRef("odd@0123456789ab", None, "detect", names)
    box = Detection(names[0], 0, 0.4, (10, 10, 50, 40))
    recording(tmp_path / "rec", [(0.0, [box], ("defect", [names[1]]))], model=model)  # the VLM relabels it
    export(tmp_path / "rec", tmp_path / "out")
    with (tmp_path / "out" / "review.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    cells = [c for row in rows[1:] for c in row]
    assert cells and not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "'@SUM(1)" in cells
