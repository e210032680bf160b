"""The checks ``edge-agent models train`` runs before anything slow, without torch: the dataset's layout and
every label line, the base model and its classes, the output folder. Each bad input is a clear error."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from agent.errors import DatasetError, EdgeAgentError, ModelError
from agent.tooling.dataset.synth import CLASSIFY_NAMES, write_classify_dataset, write_synthetic_dataset
from agent.tooling.training.base import inspect_base, model_name
from agent.tooling.training.candidate import check_architecture, check_out_folder
from agent.tooling.training.data import check_class_names, check_training_data, task_matches
from tests.cli.test_models_cli import assert_fails_cleanly, edge_agent
from tests.prefilter.onnx_builders import constant_output_model

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"
DETECTOR = MODELS / "conveyor-yolov8n.onnx"
CLASSIFIER = MODELS / "conveyor-resnet-cls.int8.onnx"


@pytest.fixture(scope="module")
def yolo_set(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("yolo") / "ds"
    write_synthetic_dataset(root, 4, 3, seed=5)
    return root


@pytest.fixture(scope="module")
def classify_set(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("cls") / "ds"
    write_classify_dataset(root, 6, 4, seed=5)
    return root


@pytest.fixture
def yolo_copy(yolo_set: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy the test may break (its data.yaml's path pointing at the copy)."""
    root = tmp_path / "ds"
    shutil.copytree(yolo_set, root)
    yaml_path = root / "data.yaml"
    yaml_path.write_text(yaml_path.read_text().replace(f"path: {yolo_set.resolve()}", f"path: {root.resolve()}"))
    return root


def test_a_yolo_dataset_is_read_with_its_classes_and_counts(yolo_set: pathlib.Path) -> None:
    data = check_training_data(yolo_set)
    assert data.task == "detect" and data.names == ("scratch", "hole", "stain", "missing")
    assert (len(data.train), len(data.val)) == (4, 3)
    labels = [ln for p in sorted((yolo_set / "labels" / "train").iterdir()) for ln in p.read_text().splitlines()]
    assert sum(data.counts["train"].values()) == len(labels)  # one object per label line
    assert check_training_data(yolo_set / "data.yaml").train == data.train  # the yaml itself works too


def test_an_imagefolder_dataset_is_read_with_each_images_class(classify_set: pathlib.Path) -> None:
    data = check_training_data(classify_set)
    assert data.task == "classify" and data.names == CLASSIFY_NAMES
    assert (len(data.train), len(data.val)) == (6, 4)
    assert all(p.parent.name == c for p, c in zip(data.train, data.train_classes, strict=True))
    assert sum(data.counts["val"].values()) == 4


@pytest.mark.parametrize(("line", "message"), [
    ("1 0.5 0.5 0.2", "expected 5 numbers 'class cx cy w h', got 4 fields"),  # a field missing
    ("1 0.5 0.5 0.2 0.2 0.1 0.1", "got 7 fields"),  # a polygon, not a box
    ("7 0.5 0.5 0.2 0.2", "class id 7 is out of range; the dataset has 4 classes"),  # only 0..3 exist
    ("1.5 0.5 0.5 0.2 0.2", "class id '1.5' is not a whole number"),
    ("1 1.2 0.5 0.2 0.2", "is not normalised to 0..1"),  # centre outside the image
    ("1 320 240 64 48", "is not normalised to 0..1"),  # pixels instead of fractions
    ("1 0.5 0.5 abc 0.2", "expected 5 numbers"),
])
def test_a_broken_label_line_is_named_by_file_and_line(yolo_copy: pathlib.Path, line: str, message: str) -> None:
    label = sorted((yolo_copy / "labels" / "val").iterdir())[1]
    label.write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(DatasetError) as err:
        check_training_data(yolo_copy)
    assert f"label file {label}, line 2" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(("make", "message"), [
    (lambda root: None, "does not exist; expected a YOLO detection dataset"),  # nothing there
    (lambda root: root.mkdir(), "no data.yaml and no train/ and val/ class folders"),  # an empty folder
    (lambda root: (root / "images" / "train").mkdir(parents=True), "has images/ and labels/ but no data.yaml"),
    (lambda root: (root / "train" / "pass").mkdir(parents=True), "has train/ but no val/"),
    (lambda root: (root.mkdir(), (root / "notes.txt").write_text("x")) and root / "notes.txt",
     "no data.yaml and no train/ and val/ class folders"),
])
def test_a_folder_of_no_known_layout_is_refused(tmp_path: pathlib.Path, make: object, message: str) -> None:
    root = tmp_path / "data"
    make(root)  # type: ignore[operator]
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_training_data(root)


def test_a_data_yaml_without_names_is_refused(yolo_copy: pathlib.Path) -> None:
    yaml_path = yolo_copy / "data.yaml"
    yaml_path.write_text(yaml_path.read_text().split("names:")[0])
    with pytest.raises(DatasetError, match="no 'names'"):
        check_training_data(yolo_copy)


def test_classes_other_than_the_base_models_are_refused_with_both_lists(yolo_copy: pathlib.Path) -> None:
    base = inspect_base(DETECTOR)
    assert base.task == "detect" and not base.quantized and base.name == "conveyor-yolov8n"
    check_class_names(check_training_data(yolo_copy), base.names, base.path)  # the same classes: fine
    yaml_path = yolo_copy / "data.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("0: scratch\n  1: hole", "0: hole\n  1: scratch"))
    with pytest.raises(DatasetError) as err:
        check_class_names(check_training_data(yolo_copy), base.names, base.path)
    text = str(err.value)
    assert "0: hole, 1: scratch, 2: stain, 3: missing" in text  # the dataset's
    assert "0: scratch, 1: hole, 2: stain, 3: missing" in text  # the model's
    assert "conveyor-yolov8n.onnx" in text


def test_a_class_folder_the_classifier_does_not_know_is_refused(classify_set: pathlib.Path,
                                                                  tmp_path: pathlib.Path) -> None:
    base = inspect_base(CLASSIFIER)
    assert base.task == "classify" and base.quantized and base.name == "conveyor-resnet-cls"
    root = tmp_path / "ds"
    shutil.copytree(classify_set, root)
    (root / "dataset.json").unlink()  # the folders name the classes
    check_class_names(check_training_data(root), base.names, base.path)
    shutil.move(root / "train" / "pass", root / "train" / "ok")
    with pytest.raises(DatasetError) as err:
        check_class_names(check_training_data(root), base.names, base.path)
    assert "class folder(s) ok" in str(err.value) and "pass, scratch, hole, stain, missing" in str(err.value)


def test_a_dataset_of_the_other_task_is_refused(classify_set: pathlib.Path) -> None:
    with pytest.raises(DatasetError, match="is a dataset for a classifier .* but --base conveyor-yolov8n.onnx is a "
                                           "detector"):
        task_matches(check_training_data(classify_set), "detect", DETECTOR)


def test_a_base_that_is_not_a_prefilter_model_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        inspect_base(tmp_path / "none.onnx")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ModelError, match=r"is not an .onnx, .pt or .yaml file"):
        inspect_base(tmp_path / "weights.bin")
    with pytest.raises(ModelError, match="does not exist"):
        inspect_base(tmp_path / "yolov8n.pt")  # a checkpoint must be here: nothing is downloaded
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="expected an ONNX prefilter model the agent runs"):
        inspect_base(tmp_path / "junk.onnx")


@pytest.mark.parametrize(("file", "name"), [
    ("conveyor-yolov8n.onnx", "conveyor-yolov8n"),
    ("conveyor-yolov8n.int8.onnx", "conveyor-yolov8n"),  # the cpu flavour
    ("conveyor-yolov8n.int8-trt.onnx", "conveyor-yolov8n"),  # the TensorRT flavour
    ("my.model.onnx", "my.model"),
])
def test_the_candidate_is_named_after_the_base_model(file: str, name: str) -> None:
    assert model_name(pathlib.Path(file)) == name


def test_an_output_folder_that_is_not_empty_needs_overwrite(tmp_path: pathlib.Path) -> None:
    check_out_folder(tmp_path / "new", overwrite=False)  # missing: fine
    check_out_folder(tmp_path, overwrite=False)  # empty: fine
    (tmp_path / "old.onnx").write_bytes(b"x")
    with pytest.raises(EdgeAgentError, match="exists and is not empty; .* --overwrite"):
        check_out_folder(tmp_path, overwrite=False)
    check_out_folder(tmp_path, overwrite=True)
    with pytest.raises(EdgeAgentError, match="is a file"):
        check_out_folder(tmp_path / "old.onnx", overwrite=True)


def test_the_command_names_each_bad_input_and_exits_2(yolo_copy: pathlib.Path, tmp_path: pathlib.Path) -> None:
    label = sorted((yolo_copy / "labels" / "train").iterdir())[0]
    good = label.read_text()
    label.write_text("9 0.5 0.5 0.1 0.1\n")
    proc = edge_agent("models", "train", "--data", str(yolo_copy), "--base", str(DETECTOR),
                      "--out", str(tmp_path / "cand"))
    assert_fails_cleanly(proc, f"label file {label}, line 1: class id 9 is out of range")
    assert not (tmp_path / "cand").exists()
    label.write_text(good)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    proc = edge_agent("models", "train", "--data", str(yolo_copy), "--base", str(DETECTOR),
                      "--out", str(tmp_path / "busy"))
    assert_fails_cleanly(proc, "exists and is not empty")
    proc = edge_agent("models", "train", "--data", str(yolo_copy), "--base", str(CLASSIFIER),
                      "--out", str(tmp_path / "cand"))
    assert_fails_cleanly(proc, "is a dataset for a detector (YOLO labels), but --base conveyor-resnet-cls.int8.onnx")
    proc = edge_agent("models", "train", "--data", str(yolo_copy), "--base", str(DETECTOR), "--imgsz", "300")
    assert_fails_cleanly(proc, "multiples of 32")
    proc = edge_agent("models", "train", "--data", str(yolo_copy), "--base", str(DETECTOR), "--export-epoch", "first",
                      "--out", str(tmp_path / "cand"))
    assert_fails_cleanly(proc, "--export-epoch 'first': expected best or last")


def test_without_the_train_extra_the_command_says_what_to_install(yolo_set: pathlib.Path,
                                                                  tmp_path: pathlib.Path) -> None:
    # the train extra's modules hidden from the import system: what an install without the extra sees
    code = ("import sys, importlib.util\n"
            "real = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda n, *a: None if n.split('.')[0] in ('torch', 'ultralytics', 'onnxslim') "
            "else real(n, *a)\n"
            "from agent.cli.main import main\n"
            f"sys.argv = ['edge-agent', 'models', 'train', '--data', {str(yolo_set)!r}, '--base', {str(DETECTOR)!r},"
            f" '--out', {str(tmp_path / 'cand')!r}]\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert_fails_cleanly(proc, "needs the train extra, and torch, ultralytics, onnxslim are not installed; run "
                               "`pip install -e '.[train]'`")
    assert not (tmp_path / "cand").exists()


def test_the_runtime_never_imports_the_train_extra() -> None:
    code = ("import sys\n"
            "import agent.cli.main, agent.tooling.training.command, agent.tooling.training.candidate\n"
            "import agent.tooling.training.data\n"
            "import agent.tooling.training.detector, agent.tooling.training.classifier, agent.tooling.training.resnet\n"
            "heavy = [m for m in ('torch', 'ultralytics', 'torchvision') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("task", "output", "message"), [
    ("detect", np.zeros((1, 8, 2100), np.float32), "no tensor 'model.0.conv.weight'; expected a YOLOv8 detector"),
    ("classify", np.full((1, 4), 0.25, np.float32), "0 linear layers; expected the frame classifier"),
])
def test_a_base_of_another_architecture_is_refused_before_training(
        tmp_path: pathlib.Path, task: str, output: np.ndarray, message: str) -> None:
    # a model the agent runs (the right input and output layout), but not a network we can rebuild and train
    path = constant_output_model(tmp_path / f"other-{task}.onnx", output, input_shape=(1, 3, 320, 320), metadata={
        "task": task, "names": repr(dict(enumerate(("scratch", "hole", "stain", "missing")))), "imgsz": "[320, 320]"})
    base = inspect_base(path)
    assert base.task == task
    with pytest.raises(ModelError, match=message):
        check_architecture(base)


def test_the_shipped_models_are_architectures_we_train() -> None:
    assert check_architecture(inspect_base(DETECTOR)) == "YOLOv8n (relu)"
    assert check_architecture(inspect_base(CLASSIFIER)) == "ResNet-18 layout, width 64"  # from its INT8 weights
