"""``edge-agent models quantize`` as a user runs it: the gate lets a good INT8 model through with its
record and card, refuses a broken one, and names every bad input."""

from __future__ import annotations

import json
import pathlib
import shutil

import cv2
import numpy as np
import onnx
import pytest

from agent.config.models import DEFAULT_MODEL
from agent.prefilter.model_info import file_digest
from agent.tooling.dataset.synth import write_synthetic_dataset
from tests.cli.test_models_cli import assert_fails_cleanly, edge_agent
from tests.prefilter.onnx_builders import constant_output_model


@pytest.fixture(scope="module")
def val_set(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("val") / "ds"
    write_synthetic_dataset(root, 1, 20, seed=7)
    return root


@pytest.fixture
def model_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    """The shipped FP32 model and its card, in a folder the test may write to."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(DEFAULT_MODEL, folder / DEFAULT_MODEL.name)
    shutil.copyfile(DEFAULT_MODEL.with_suffix(".md"), folder / (DEFAULT_MODEL.stem + ".md"))
    return folder / DEFAULT_MODEL.name


def _quantize(model: pathlib.Path, val: pathlib.Path, *extra: str) -> tuple[int, str, str]:
    proc = edge_agent("models", "quantize", str(model), "--calib", "synthetic", "--calib-count", "8",
                      "--val", str(val), "--flavour", "cpu", *extra, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def test_the_gate_refuses_a_broken_quantization(model_copy: pathlib.Path, val_set: pathlib.Path) -> None:
    # --break-decode quantizes the head's final concat too: pixel boxes and 0..1 scores share one INT8 scale
    card_before = (model_copy.parent / "conveyor-yolov8n.md").read_text()
    code, _out, err = _quantize(model_copy, val_set, "--break-decode")
    assert code == 1
    assert "calibrate cpu: 8/8" in err and "evaluate FP32: 20/20" in err and "evaluate INT8 cpu: 20/20" in err
    refusal = next(line for line in err.splitlines() if line.startswith("REFUSED cpu"))
    assert "points below FP32" in refusal and "at most 1.00 points are allowed" in refusal
    assert f"Nothing written to {model_copy.parent / 'conveyor-yolov8n.int8.onnx'}" in refusal
    assert sorted(p.name for p in model_copy.parent.iterdir()) == ["conveyor-yolov8n.md", "conveyor-yolov8n.onnx"]
    assert (model_copy.parent / "conveyor-yolov8n.md").read_text() == card_before  # the card is left alone


def test_a_passing_model_gets_its_gate_record_and_card_section(
        model_copy: pathlib.Path, val_set: pathlib.Path) -> None:
    out_dir = model_copy.parent  # next to the model: its card gets the INT8 section (not so with --out-dir)
    code, out, err = _quantize(model_copy, val_set, "--float-stem", "2", "--max-drop", "5",
                               "--max-verdict-changes", "20")
    assert code == 0, err
    int8 = out_dir / "conveyor-yolov8n.int8.onnx"
    assert f"passed cpu: {int8}" in out
    record = json.loads((out_dir / "conveyor-yolov8n.int8.gate.json").read_text())
    assert record["schema"] == "edge-agent/int8-gate/v1" and record["gate"]["passed"] is True
    assert record["model"]["sha256"] == file_digest(int8)
    assert record["source_model"]["sha256"] == file_digest(model_copy)
    assert record["validation"]["images"] == 20 and record["calibration"]["frames"] == 8
    assert set(record["per_class"]["classes"]) == {"scratch", "hole", "stain", "missing"}
    stem = ["/model.0/conv/Conv", "/model.1/conv/Conv"]  # --float-stem 2
    assert record["quantization"]["stem_kept_float"] == stem
    int8_graph = onnx.load(str(int8)).graph
    float_weights = {i.name for i in int8_graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert all(n.input[1] in float_weights for n in int8_graph.node if n.name in stem)  # no DequantizeLinear
    card = (model_copy.parent / "conveyor-yolov8n.md").read_text()
    assert "## INT8 (accuracy-gated)" in card and "`conveyor-yolov8n.int8.onnx`" in card
    assert "the first 2 convolutions (`/model.0/conv/Conv`, `/model.1/conv/Conv`)" in card
    assert card.startswith("# conveyor-yolov8n")  # the card's own text is kept

    info = edge_agent("models", "info", str(int8))
    assert info.returncode == 0, info.stderr
    assert "precision:  int8" in info.stdout and "quantized:  cpu flavour, QDQ" in info.stdout
    assert "gate:       passed" in info.stdout
    changed = onnx.load(str(int8))  # the file changes after the gate ran
    changed.metadata_props.append(onnx.StringStringEntryProto(key="note", value="edited"))
    onnx.save(changed, str(int8))
    assert "gate:       stale" in edge_agent("models", "info", str(int8)).stdout


def test_bad_model_files(tmp_path: pathlib.Path, val_set: pathlib.Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("hello")
    assert_fails_cleanly(edge_agent("models", "quantize", str(text), "--calib", "synthetic", "--val", str(val_set)),
                         "is not an ONNX model")
    bare = constant_output_model(tmp_path / "bare.onnx", np.zeros((1, 8, 2100), np.float32),
                                 input_shape=(1, 3, 320, 320))
    assert_fails_cleanly(edge_agent("models", "quantize", str(bare), "--calib", "synthetic", "--val", str(val_set)),
                         "no class names in the ONNX metadata")


def _frames(folder: pathlib.Path, *images: np.ndarray, suffix: str = ".png") -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}{suffix}"), image)
    return folder


def test_bad_calibration_folders(tmp_path: pathlib.Path, val_set: pathlib.Path) -> None:
    colour = np.full((48, 64, 3), 120, np.uint8)
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("frames go here")
    corrupt = _frames(tmp_path / "corrupt", colour)
    (corrupt / "001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cases = {
        str(tmp_path / "nowhere"): "calibration folder {p} does not exist",
        str(empty): "calibration folder {p} has no images (it is empty)",
        str(tmp_path / "notes"): "has no images (found readme.txt...)",
        str(corrupt): "calibration image {p}/001.jpg: cannot be decoded",
        str(_frames(tmp_path / "deep", np.full((48, 64), 900, np.uint16))):
            "{p}/000.png: uint16 pixels; expected 8-bit colour or grey frames",
        str(_frames(tmp_path / "alpha", np.full((48, 64, 4), 9, np.uint8))):
            "{p}/000.png: 4 channels (colour + alpha); expected 3-channel colour or 1-channel grey frames",
        str(_frames(tmp_path / "sizes", colour, np.full((60, 80, 3), 9, np.uint8))):
            "{p}/001.png: 80x60 pixels, but the first image is 64x48",
        str(_frames(tmp_path / "tiny", np.full((8, 8, 3), 9, np.uint8))): "8x8 pixels; expected camera frames between",
    }
    for folder, message in cases.items():
        proc = edge_agent("models", "quantize", str(DEFAULT_MODEL), "--calib", folder, "--val", str(val_set))
        assert_fails_cleanly(proc, message.format(p=folder))


def test_grey_frames_calibrate_and_gate_as_a_mono_camera_sends_them(
        model_copy: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # a mono camera's dataset: the synthetic conveyor's frames saved as single-channel JPEGs, for the
    # calibration folder and for the gate's labelled validation set
    grey = tmp_path / "grey"
    write_synthetic_dataset(grey, 1, 12, seed=7)
    for image in sorted(grey.glob("images/*/*.jpg")):
        cv2.imwrite(str(image), cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2GRAY))
    assert cv2.imread(str(next(grey.glob("images/val/*.jpg"))), cv2.IMREAD_UNCHANGED).ndim == 2
    proc = edge_agent("models", "quantize", str(model_copy), "--calib", str(grey / "images" / "val"),
                      "--calib-count", "6", "--val", str(grey), "--flavour", "cpu", "--max-drop", "10",
                      "--max-verdict-changes", "30", timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "calibrate cpu: 6/6" in proc.stderr and "evaluate INT8 cpu: 12/12" in proc.stderr
    record = json.loads((model_copy.parent / "conveyor-yolov8n.int8.gate.json").read_text())
    assert record["calibration"]["frames"] == 6 and record["validation"]["images"] == 12


def test_calibration_reads_a_grey_file_as_capture_converts_a_grey_frame(tmp_path: pathlib.Path) -> None:
    from agent.capture.sources import as_bgr
    from agent.tooling.quantize.calibration import from_folder

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 56), dtype=np.uint8) for _ in range(2)]
    calib = from_folder(_frames(tmp_path / "mono", *frames), 10)
    assert calib.count == 2 and calib.frame_size == (56, 40)
    for got, grey in zip(calib.frames(), frames, strict=True):
        assert got.shape == (40, 56, 3) and np.array_equal(got, as_bgr(grey))
