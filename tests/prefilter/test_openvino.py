"""model.runtime openvino: the shipped models on real frames give ONNX Runtime's boxes (within a stated tolerance),
an OpenVINO IR works like its ONNX file, batches and concurrent runs, the compiled-model cache, and bad input.

Tolerances (measured on the 20 golden frames, conf 0.25): FP32, OpenVINO against ONNX Runtime: IoU >= 0.999 and
confidences within 1e-3 (seen: 0.99999, 1e-6). INT8 Q/DQ: the two runtimes' INT8 kernels round differently, so
each box has its twin of the same class with IoU >= 0.8 and confidence within 0.05 (seen: 0.82, 0.026), and the
mean IoU is >= 0.95; both agree with the FP32 model about equally (mean IoU 0.92 OpenVINO, 0.91 ONNX Runtime).
The INT8 classifier: the same top class, every probability within 0.05 (seen 0.035).
"""

from __future__ import annotations

import builtins
import pathlib
import threading
from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'edge-agent[openvino]')")

from agent.config.models import DEFAULT_MODEL, DEFAULT_PREFILTER, REPO_MODELS, ModelConfig  # noqa: E402
from agent.core.detections import PrefilterResult  # noqa: E402
from agent.errors import ModelError  # noqa: E402
from agent.prefilter.factory import open_prefilter  # noqa: E402
from agent.prefilter.yolo_decode import iou_one_to_many  # noqa: E402

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "data" / "golden"
CLASSIFIER = REPO_MODELS / "conveyor-resnet-cls.int8.onnx"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    images = [cv2.imread(str(p)) for p in sorted(GOLDEN.glob("*.jpg"))]
    assert len(images) == 20 and all(i is not None for i in images)
    return images


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("engines")


def opened(path: pathlib.Path, runtime: str, cache_dir: pathlib.Path, **kw: Any) -> Any:
    return open_prefilter(path, ModelConfig(path=path, runtime=runtime, engine_cache_dir=cache_dir, min_score=0.25,
                                            **kw))


def pair_up(ref: PrefilterResult, got: PrefilterResult) -> list[tuple[float, float]]:
    """(IoU, |confidence difference|) of each reference box with its best same-class twin; fails when one is missing
    or the counts differ."""
    assert len(ref.detections) == len(got.detections), (ref.detections, got.detections)
    out = []
    for d in ref.detections:
        same = [g for g in got.detections if g.class_id == d.class_id]
        assert same, f"no twin of {d} in {got.detections}"
        ious = iou_one_to_many(np.array(d.box), np.array([g.box for g in same]).reshape(-1, 4))
        k = int(np.argmax(ious))
        out.append((float(ious[k]), abs(same[k].confidence - d.confidence)))
    return out


def test_fp32_detector_boxes_equal_onnxruntime(frames, cache_dir):
    ort = opened(DEFAULT_MODEL, "onnxruntime", cache_dir)
    ov = opened(DEFAULT_MODEL, "openvino", cache_dir)
    assert ov.session.get_providers()[0].startswith("OpenVINO ")
    pairs = [p for f in frames for p in pair_up(ort.infer(f), ov.infer(f))]
    assert len(pairs) >= 15  # the golden frames hold that many boxes at conf 0.25
    assert min(iou for iou, _ in pairs) >= 0.999
    assert max(dc for _, dc in pairs) < 1e-3


def test_int8_detector_boxes_equal_onnxruntime_within_int8_rounding(frames, cache_dir):
    ort = opened(DEFAULT_PREFILTER, "onnxruntime", cache_dir)
    ov = opened(DEFAULT_PREFILTER, "openvino", cache_dir)
    pairs = [p for f in frames for p in pair_up(ort.infer(f), ov.infer(f))]
    assert len(pairs) >= 15
    assert min(iou for iou, _ in pairs) >= 0.8
    assert float(np.mean([iou for iou, _ in pairs])) >= 0.95
    assert max(dc for _, dc in pairs) < 0.05


def test_int8_classifier_agrees_with_onnxruntime(frames, cache_dir):
    ort = opened(CLASSIFIER, "onnxruntime", cache_dir)
    ov = opened(CLASSIFIER, "openvino", cache_dir)
    for f in frames:
        a, b = ort.infer(f).probabilities, ov.infer(f).probabilities
        assert [n for n, _ in a] == [n for n, _ in b]
        assert max(a, key=lambda p: p[1])[0] == max(b, key=lambda p: p[1])[0]
        assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) < 0.05


def test_an_ir_runs_like_its_onnx_file_with_its_metadata(frames, cache_dir, tmp_path):
    import openvino

    xml = tmp_path / "detector.xml"
    openvino.save_model(openvino.Core().read_model(str(DEFAULT_MODEL)), str(xml), compress_to_fp16=False)
    ir = opened(xml, "openvino", cache_dir)
    onnx_file = opened(DEFAULT_MODEL, "openvino", cache_dir, input_size="square")  # an IR runs at its own size
    assert ir.info.names == onnx_file.info.names and ir.info.task == "detect"
    for f in frames[4:8]:
        assert all(iou >= 0.999 for iou, _ in pair_up(onnx_file.infer(f), ir.infer(f)))


def test_a_batch_and_concurrent_runs_give_each_frames_own_boxes(frames, cache_dir):
    ov = opened(DEFAULT_MODEL, "openvino", cache_dir, max_batch=4, concurrent_runs=2, intra_op_threads=1)
    assert ov.max_batch == 4 and ov.concurrent_runs == 2
    alone = [ov.infer(f) for f in frames[8:12]]
    together = ov.infer_batch(frames[8:12])
    for a, b in zip(alone, together, strict=True):
        assert all(iou >= 0.999 for iou, _ in pair_up(a, b))
    buffers = [ov.new_input(), ov.new_input()]
    tensors = [ov.prepare(frames[8 + i:9 + i], buffers[i])[0] for i in range(2)]
    expected = [ov.forward(t) for t in tensors]
    got: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def run(i: int) -> None:
        for _ in range(10):
            got[i].append(ov.forward(tensors[i]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert len(got[i]) == 10 and all(np.allclose(g, expected[i], atol=1e-4) for g in got[i])


def test_the_compiled_model_is_cached_keyed_by_the_model_file(cache_dir):
    from agent.prefilter.model_info import file_digest

    opened(DEFAULT_PREFILTER, "openvino", cache_dir, max_batch=1)
    folders = list((cache_dir / "openvino").glob(f"conveyor-yolov8n.int8-{file_digest(DEFAULT_PREFILTER)[:12]}-b1-ov*"))
    assert len(folders) == 1 and any(p.suffix == ".blob" for p in folders[0].iterdir())


def test_without_the_extra_the_message_says_what_to_install(monkeypatch, cache_dir):
    real_import = builtins.__import__

    def no_openvino(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(ModelError, match=r"pip install 'edge-agent\[openvino\]'"):
        opened(DEFAULT_PREFILTER, "openvino", cache_dir)


def test_a_file_openvino_cannot_read_is_named(tmp_path, cache_dir):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not a model" * 50)
    with pytest.raises(ModelError, match=r"garbage.onnx could not be read by OpenVINO .*expected an ONNX model or"):
        opened(bad, "openvino", cache_dir)
    xml = tmp_path / "lonely.xml"
    xml.write_text("<net/>")
    with pytest.raises(ModelError, match=r"lonely.xml is an OpenVINO IR but its weights lonely.bin are missing"):
        opened(xml, "openvino", cache_dir)
    with pytest.raises(ModelError, match=r"does not exist"):
        opened(tmp_path / "absent.onnx", "openvino", cache_dir)


# -- model.runtime auto ---------------------------------------------------------------------------------------


def test_auto_with_only_onnxruntime_says_so_and_does_not_probe(monkeypatch, cache_dir, caplog):
    from agent.prefilter import runtime_choice

    monkeypatch.setattr(runtime_choice, "openvino_version", lambda: None)
    monkeypatch.setattr(runtime_choice, "measure", lambda models: pytest.fail("probed with one runtime"))
    with caplog.at_level("INFO", logger="agent.prefilter.runtime_choice"):
        model = opened(DEFAULT_PREFILTER, "auto", cache_dir)
    assert "OpenVINO" not in model.session.get_providers()[0]
    assert "only onnxruntime is installed, so it is used without a probe" in caplog.text
    assert "pip install 'edge-agent[openvino]'" in caplog.text


def test_auto_probes_both_caches_the_result_and_reads_it_back(monkeypatch, tmp_path):
    from agent.prefilter import runtime_choice

    config = ModelConfig(path=DEFAULT_PREFILTER, runtime="auto", engine_cache_dir=tmp_path, max_batch=1)
    model, choice = runtime_choice.choose_runtime(DEFAULT_PREFILTER, config, open_prefilter)
    assert choice.how == "probed now" and set(choice.frames_per_s) == {"onnxruntime", "openvino"}
    assert all(fps > 0 for fps in choice.frames_per_s.values())
    assert choice.runtime == max(choice.frames_per_s, key=lambda rt: choice.frames_per_s[rt])
    assert ("OpenVINO" in model.session.get_providers()[0]) == (choice.runtime == "openvino")
    assert choice.record is not None and choice.record.parent == tmp_path / "runtime-choice"
    monkeypatch.setattr(runtime_choice, "measure", lambda models: pytest.fail("probed again"))
    again, cached = runtime_choice.choose_runtime(DEFAULT_PREFILTER, config, open_prefilter)
    assert cached.how == "probe cached" and cached.runtime == choice.runtime
    assert cached.frames_per_s == choice.frames_per_s
    assert runtime_choice.read_choice(DEFAULT_PREFILTER, config.model_copy(update={"concurrent_runs": 1})) is None


def test_runtime_names_in_the_config():
    assert ModelConfig(runtime="openvino").runtime == "openvino"
    assert ModelConfig(runtime="auto").runtime == "auto"
    with pytest.raises(ValueError, match="openvino"):
        ModelConfig(runtime="openvin0")


def test_an_anomaly_model_runs_on_openvino_like_on_onnxruntime(tmp_path, cache_dir):
    from tests.prefilter.onnx_builders import brightness_anomaly_model

    path = brightness_anomaly_model(tmp_path / "bright.onnx")
    frame = np.zeros((128, 128, 3), np.uint8)
    frame[32:64, 64:96] = 255
    a, b = (opened(path, rt, cache_dir).infer(frame) for rt in ("onnxruntime", "openvino"))
    assert b.task == a.task == "anomaly" and b.detections
    assert pair_up(a, b) and all(iou >= 0.999 and dc < 1e-4 for iou, dc in pair_up(a, b))


def test_auto_uses_the_runtime_that_runs_the_model_when_the_other_refuses_it(monkeypatch, tmp_path, caplog):
    from agent.prefilter import runtime_choice

    def opener(path: pathlib.Path, config: ModelConfig) -> Any:
        if config.runtime == "openvino":
            raise ModelError(f"model file {path} could not be read by OpenVINO: an operator it lacks")
        return open_prefilter(path, config)

    monkeypatch.setattr(runtime_choice, "measure", lambda models: pytest.fail("probed with one runtime"))
    config = ModelConfig(path=DEFAULT_PREFILTER, runtime="auto", engine_cache_dir=tmp_path)
    with caplog.at_level("WARNING", logger="agent.prefilter.runtime_choice"):
        model, choice = runtime_choice.choose_runtime(DEFAULT_PREFILTER, config, opener)
    assert choice.runtime == "onnxruntime" and "OpenVINO" not in model.session.get_providers()[0]
    assert "openvino cannot run conveyor-yolov8n.int8.onnx (model file" in caplog.text
    assert "an operator it lacks" in choice.describe() and not (tmp_path / "runtime-choice").exists()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nothing")
    with pytest.raises(ModelError, match="bad.onnx"):
        runtime_choice.choose_runtime(bad, config.model_copy(update={"path": bad}), open_prefilter)
