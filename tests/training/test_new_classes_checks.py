"""``models train --new-classes``, ``--time`` and ``--taxonomy``: the checks made before anything slow, without
torch. Each bad input is a clear error naming the item, and nothing is written."""

from __future__ import annotations

import pathlib

import pytest

from agent.errors import DatasetError, EdgeAgentError
from agent.tooling.dataset.synth import write_classify_dataset, write_synthetic_dataset
from agent.tooling.training.base import inspect_base
from agent.tooling.training.candidate import TrainOptions, check_inputs
from agent.tooling.training.data import check_training_data
from agent.tooling.training.newclasses import check_classes, check_time
from tests.cli.test_models_cli import assert_fails_cleanly, edge_agent

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"
DETECTOR = MODELS / "conveyor-yolov8n.onnx"
CLASSIFIER = MODELS / "conveyor-resnet-cls.int8.onnx"
SURFACE_NAMES = ("scratch", "pit", "stain", "crack", "inclusion", "dent")


@pytest.fixture(scope="module")
def surface_set(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("surface") / "surface"
    write_synthetic_dataset(root, 2, 2, seed=5, scene="surface")
    return root


@pytest.fixture(scope="module")
def surface_folders(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("surface-cls") / "surface-cls"
    write_classify_dataset(root, 7, 7, seed=5, scene="surface")
    return root


def _opts(data: pathlib.Path, base: pathlib.Path, out: pathlib.Path, **kw: object) -> TrainOptions:
    fields: dict[str, object] = {"data": data, "base": base, "out": out, "epochs": 1, "imgsz": None, "lr0": None,
                                 "batch": 2, "threads": 1, "seed": 0, "quantize": False, "overwrite": False,
                                 "verbose": False, "command": "test"}
    fields.update(kw)
    return TrainOptions(**fields)  # type: ignore[arg-type]


def test_new_classes_on_the_shipped_detector_keep_its_backbone_at_the_datasets_size(
        surface_set: pathlib.Path, tmp_path: pathlib.Path) -> None:
    plan = check_inputs(_opts(surface_set, DETECTOR, tmp_path / "cand", new_classes=True))
    assert plan.new_head and plan.names == SURFACE_NAMES and plan.base.names == ("scratch", "hole", "stain", "missing")
    assert plan.name == "surface-conveyor-yolov8n"  # not mistaken for the conveyor model
    assert plan.imgsz == (640,)  # the surface frames' own size: small defects are not shrunk (base input 320)
    assert check_inputs(_opts(surface_set, DETECTOR, tmp_path / "c", new_classes=True, imgsz=(320,))).imgsz == (320,)


def test_a_model_yaml_trains_from_scratch_without_the_flag(surface_set: pathlib.Path, tmp_path: pathlib.Path) -> None:
    plan = check_inputs(_opts(surface_set, pathlib.Path("yolov8n.yaml"), tmp_path / "cand"))
    assert plan.base.kind == "yaml" and plan.new_head and plan.names == SURFACE_NAMES
    assert plan.name == "surface-yolov8n" and plan.imgsz == (640,)
    with pytest.raises(Exception, match="does not exist"):
        inspect_base(pathlib.Path("my-own-net.yaml"))  # only ultralytics' own names are known without a file


def test_the_classes_of_a_fine_tune_are_checked_and_the_flag_only_where_it_changes_them(
        surface_set: pathlib.Path, surface_folders: pathlib.Path) -> None:
    base = inspect_base(DETECTOR)
    with pytest.raises(DatasetError, match="a fine-tune keeps the model's classes.*give --new-classes"):
        check_classes(check_training_data(surface_set), base, new_classes=False)
    cls = check_training_data(surface_folders)
    assert cls.names[0] == "pass" and check_classes(cls, inspect_base(CLASSIFIER), new_classes=True)
    with pytest.raises(DatasetError, match="class folder.*give --new-classes"):
        check_classes(cls, inspect_base(CLASSIFIER), new_classes=False)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_a_time_budget_must_be_positive_hours(value: float) -> None:
    with pytest.raises(EdgeAgentError, match=r"--time .*: expected a training budget in hours above 0"):
        check_time(value)
    check_time(0.05)
    check_time(None)


def test_the_command_names_each_bad_input_and_writes_nothing(surface_set: pathlib.Path, surface_folders: pathlib.Path,
                                                             tmp_path: pathlib.Path) -> None:
    out = tmp_path / "cand"
    train = ("models", "train", "--out", str(out))
    proc = edge_agent(*train, "--data", str(surface_set), "--base", str(DETECTOR))
    assert_fails_cleanly(proc, "give --new-classes to train a new head")
    proc = edge_agent(*train, "--data", str(surface_set), "--base", str(DETECTOR), "--new-classes", "--time", "0")
    assert_fails_cleanly(proc, "--time 0: expected a training budget in hours above 0")
    proc = edge_agent(*train, "--data", str(surface_set), "--base", str(DETECTOR), "--new-classes", "--time", "-2")
    assert_fails_cleanly(proc, "--time -2: expected a training budget in hours above 0")
    # a detection dataset for a classifier base, and the reverse
    proc = edge_agent(*train, "--data", str(surface_set), "--base", str(CLASSIFIER), "--new-classes")
    assert_fails_cleanly(proc, "is a dataset for a detector (YOLO labels), but --base conveyor-resnet-cls.int8.onnx "
                               "is a classifier")
    proc = edge_agent(*train, "--data", str(surface_folders), "--base", str(DETECTOR), "--new-classes")
    assert_fails_cleanly(proc, "is a dataset for a classifier (image folders), but --base conveyor-yolov8n.onnx "
                               "is a detector")
    proc = edge_agent(*train, "--data", str(surface_folders), "--base", "yolov8n.yaml")
    assert_fails_cleanly(proc, "but --base yolov8n.yaml is a detector (YOLO labels)")
    # the conveyor's own classes with --new-classes: nothing new
    conveyor = tmp_path / "conveyor"
    write_synthetic_dataset(conveyor, 1, 1, seed=3)
    proc = edge_agent(*train, "--data", str(conveyor), "--base", str(DETECTOR), "--new-classes")
    assert_fails_cleanly(proc, "--new-classes: the dataset's classes (scratch, hole, stain, missing) are the base "
                               "model's")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "conveyor"] == []


def test_dataset_classes_that_clash_with_the_taxonomy_are_named(surface_set: pathlib.Path,
                                                                 tmp_path: pathlib.Path) -> None:
    taxonomy = tmp_path / "taxonomy.yaml"
    entries = [("SURFACE_SCRATCH", "D-1", "[scratch]"), ("PIT", "D-2", "[pit]"), ("STAIN", "D-3", "[stain]"),
               ("CRACK", "D-4", "[crack]"), ("INCLUSION", "D-5", "[inclusion, dent]")]
    taxonomy.write_text("version: 1\nlabels:\n" + "".join(
        f"  - label: {label}\n    code: {code}\n    severity: low\n    synonyms: {syn}\n"
        for label, code, syn in entries))
    out = tmp_path / "cand"
    proc = edge_agent("models", "train", "--data", str(surface_set), "--base", str(DETECTOR), "--new-classes",
                      "--taxonomy", str(taxonomy), "--out", str(out))
    assert_fails_cleanly(proc, "classes 'inclusion' and 'dent' both map to 'INCLUSION' in the taxonomy")
    taxonomy.write_text(taxonomy.read_text().replace(", dent]", "]"))
    proc = edge_agent("models", "train", "--data", str(surface_set), "--base", str(DETECTOR), "--new-classes",
                      "--taxonomy", str(taxonomy), "--out", str(out))
    assert_fails_cleanly(proc, "class(es) 'dent' are not in the taxonomy")
    assert not out.exists()


def test_the_schedule_of_each_kind_of_run() -> None:
    """A new head on a trained backbone: backbone frozen, no warm-up, a step per batch; a fine-tune keeps its
    no-mosaic schedule; a model yaml from scratch gets ultralytics' own (no key overridden but mosaic's end)."""
    from agent.tooling.training.detector import BACKBONE_LAYERS, DetectorSettings, schedule

    onnx, yaml_base = inspect_base(DETECTOR), inspect_base(pathlib.Path("yolov8n.yaml"))
    transfer = schedule(DetectorSettings(epochs=30, batch=8, new_head=True), onnx)
    assert transfer == {"close_mosaic": 10, "freeze": BACKBONE_LAYERS, "warmup_epochs": 0.0, "nbs": 8}
    assert schedule(DetectorSettings(epochs=30, batch=8, new_head=True, freeze=0), onnx)["freeze"] == 0
    assert schedule(DetectorSettings(epochs=30, batch=8), onnx) == {"close_mosaic": 30, "freeze": None}
    assert schedule(DetectorSettings(epochs=30, batch=8, new_head=True), yaml_base) == {"close_mosaic": 10,
                                                                                         "freeze": None}
