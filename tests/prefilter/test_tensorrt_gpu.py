"""TensorRT on a real NVIDIA GPU: the native engine (built, cached, batched, a refused plan rebuilt) and
ONNX Runtime's TensorRT and CUDA providers, each compared with ONNX Runtime on the CPU over the golden
frames. Marked ``gpu`` (deselected by default: ``pytest -m gpu`` runs them); each skips with the reason
where the GPU, the ``tensorrt`` module, the CUDA binding or onnxruntime-gpu is missing.

The shipped INT8 file is the ONNX Runtime CPU flavour (U8 activations), which TensorRT cannot take;
the INT8 engine here is built from the TensorRT flavour (S8S8), quantized in the test.
"""

from __future__ import annotations

import json
import logging
import pathlib

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from agent.config.models import DEFAULT_MODEL, ModelConfig
from agent.core.detections import PrefilterResult
from agent.prefilter.factory import open_prefilter
from agent.prefilter.yolo_decode import iou_one_to_many

pytestmark = pytest.mark.gpu

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "data" / "golden"
CONF = 0.3  # detections compared above this score (lower ones may fall either side of it)


def _native_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"the tensorrt module is not installed or does not load ({exc})"
    try:
        from agent.prefilter.tensorrt.platform import load_cudart

        cudart = load_cudart()
    except Exception as exc:  # noqa: BLE001 - any failure here is a reason to skip
        return f"no CUDA runtime binding: {exc}"
    err, count = cudart.cudaGetDeviceCount()
    if int(getattr(err, "value", err)) != 0 or count < 1:
        return f"no CUDA device ({err}, {count} device(s))"
    return None


NATIVE = _native_reason()
needs_native = pytest.mark.skipif(NATIVE is not None, reason=f"native TensorRT: {NATIVE}")
EPS = ort.get_available_providers()
needs_trt_ep = pytest.mark.skipif("TensorrtExecutionProvider" not in EPS,
                                  reason=f"onnxruntime-gpu with the TensorRT provider is not installed ({EPS})")
needs_cuda_ep = pytest.mark.skipif("CUDAExecutionProvider" not in EPS,
                                   reason=f"onnxruntime-gpu with the CUDA provider is not installed ({EPS})")


def frames() -> list[np.ndarray]:
    images = [cv2.imread(str(p)) for p in sorted(GOLDEN.glob("*.jpg"))[:8]]
    assert images and all(i is not None for i in images)
    return images


def infer_all(model: object, images: list[np.ndarray]) -> list[PrefilterResult]:
    return [model.infer(image) for image in images]  # type: ignore[attr-defined]


def assert_same_boxes(ours: list[PrefilterResult], ref: list[PrefilterResult], min_iou: float, max_dconf: float) -> int:
    """Every detection above CONF (+ margin) in either list has a twin of the same class in the other;
    returns how many reference detections were matched."""
    matched = 0
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        for side_a, side_b, what in ((b.detections, a.detections, "missing"), (a.detections, b.detections, "extra")):
            for d in side_a:
                if d.confidence < CONF + max_dconf:
                    continue
                twins = [o for o in side_b if o.class_id == d.class_id]
                assert twins, f"frame {i}: {what} {d}"
                ious = iou_one_to_many(np.array(d.box), np.array([o.box for o in twins]).reshape(-1, 4))
                best = twins[int(np.argmax(ious))]
                assert ious.max() >= min_iou, f"frame {i}: {what} {d}: best IoU {ious.max():.3f}"
                assert abs(best.confidence - d.confidence) <= max_dconf, f"frame {i}: {d} vs {best}"
                matched += what == "missing"
    return matched


@pytest.fixture(scope="module")
def cpu_reference() -> list[PrefilterResult]:
    model = open_prefilter(DEFAULT_MODEL, ModelConfig(path=DEFAULT_MODEL, max_batch=1))
    return infer_all(model, frames())


@needs_native
def test_native_fp16_engine_agrees_with_onnxruntime_cpu(tmp_path: pathlib.Path, cpu_reference: list[PrefilterResult],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    config = ModelConfig(path=DEFAULT_MODEL, runtime="tensorrt", precision="fp16", engine_cache_dir=tmp_path,
                         max_batch=1)
    with caplog.at_level(logging.INFO):
        model = open_prefilter(DEFAULT_MODEL, config)
    assert any("built now" in r.getMessage() for r in caplog.records)
    assert model.session.get_providers()[0].startswith("TensorRT ")  # type: ignore[union-attr]
    assert model.concurrent_runs == 1  # one execution context: model.concurrent_runs does not apply
    matched = assert_same_boxes(infer_all(model, frames()), cpu_reference, min_iou=0.9, max_dconf=0.05)
    assert matched >= 4
    sidecar = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert sidecar["key"]["precision"] == "fp16" and sidecar["key"]["batch"] == "1:1:1"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = open_prefilter(DEFAULT_MODEL, config)  # the cached plan: no second build
    assert any("(cached)" in r.getMessage() for r in caplog.records)
    assert not any("building a TensorRT engine" in r.getMessage() for r in caplog.records)
    assert_same_boxes(infer_all(again, frames()), cpu_reference, min_iou=0.9, max_dconf=0.05)


@needs_native
def test_native_engine_batches_as_the_detector_asks(tmp_path: pathlib.Path) -> None:
    config = ModelConfig(path=DEFAULT_MODEL, runtime="tensorrt", precision="fp16", engine_cache_dir=tmp_path,
                         max_batch=4)
    model = open_prefilter(DEFAULT_MODEL, config)
    assert model.max_batch == 4  # type: ignore[union-attr]
    images = frames()[:4]
    one_by_one = infer_all(model, images)
    together = model.infer_batch(images)  # type: ignore[union-attr]
    assert_same_boxes(together, one_by_one, min_iou=0.99, max_dconf=0.01)


@needs_native
def test_a_plan_tensorrt_refuses_is_rebuilt(tmp_path: pathlib.Path) -> None:
    import hashlib

    config = ModelConfig(path=DEFAULT_MODEL, runtime="tensorrt", precision="fp16", engine_cache_dir=tmp_path,
                         max_batch=1)
    open_prefilter(DEFAULT_MODEL, config)
    plan = next(tmp_path.glob("*.plan"))
    garbage = b"not a TensorRT plan, e.g. one from another TensorRT version" * 100
    plan.write_bytes(garbage)  # the sidecar is made to agree, so only TensorRT can tell
    sidecar = plan.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    record.update(plan_bytes=len(garbage), plan_sha256=hashlib.sha256(garbage).hexdigest())
    sidecar.write_text(json.dumps(record))
    model = open_prefilter(DEFAULT_MODEL, config)
    assert model.infer(frames()[0]).detections is not None
    assert plan.read_bytes() != garbage


@needs_native
def test_native_int8_engine_from_the_tensorrt_flavour(tmp_path: pathlib.Path) -> None:
    from agent.tooling.quantize import calibration
    from agent.tooling.quantize.int8 import FLAVOURS, quantize_model

    fp32 = open_prefilter(DEFAULT_MODEL, ModelConfig(path=DEFAULT_MODEL, max_batch=1))

    def tensors():  # type: ignore[no-untyped-def]
        for frame in calibration.synthetic(64, 1000).frames():
            tensor, _plan = fp32.preprocess(frame)  # type: ignore[union-attr]
            yield tensor.copy()

    int8 = tmp_path / "conveyor-yolov8n.int8-trt.onnx"
    quantize_model(DEFAULT_MODEL, int8, FLAVOURS["tensorrt"], fp32.info.input_name, tensors(), 64, float_stem=2)
    reference = infer_all(open_prefilter(int8, ModelConfig(path=int8, max_batch=1)), frames())
    config = ModelConfig(path=int8, runtime="tensorrt", engine_cache_dir=tmp_path / "engines", max_batch=1)
    model = open_prefilter(int8, config)
    sidecar = json.loads(next((tmp_path / "engines").glob("*.json")).read_text())
    assert sidecar["key"]["precision"] == "int8"
    # the same Q/DQ graph on two runtimes: rounding differs a little, the boxes do not
    assert_same_boxes(infer_all(model, frames()), reference, min_iou=0.85, max_dconf=0.08)


@needs_trt_ep
def test_onnxruntime_tensorrt_provider_agrees_and_caches(tmp_path: pathlib.Path,
                                                         cpu_reference: list[PrefilterResult]) -> None:
    config = ModelConfig(path=DEFAULT_MODEL, providers=["tensorrt", "cuda", "cpu"], precision="fp16",
                         engine_cache_dir=tmp_path, max_batch=1)
    model = open_prefilter(DEFAULT_MODEL, config)
    assert model.session.get_providers()[0] == "TensorrtExecutionProvider"  # type: ignore[union-attr]
    assert_same_boxes(infer_all(model, frames()), cpu_reference, min_iou=0.9, max_dconf=0.05)
    cached = list((tmp_path / "onnxruntime-trt").rglob("*"))
    assert any(p.suffix == ".engine" for p in cached), cached


@needs_cuda_ep
def test_onnxruntime_cuda_provider_agrees(cpu_reference: list[PrefilterResult]) -> None:
    config = ModelConfig(path=DEFAULT_MODEL, providers=["cuda", "cpu"], max_batch=1)
    model = open_prefilter(DEFAULT_MODEL, config)
    assert model.session.get_providers()[0] == "CUDAExecutionProvider"  # type: ignore[union-attr]
    assert_same_boxes(infer_all(model, frames()), cpu_reference, min_iou=0.98, max_dconf=0.01)


@needs_native
def test_the_gpu_bench_measures_every_side_and_the_cards_limit() -> None:
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_gpu.py"
    proc = subprocess.run([sys.executable, str(script), "--frames", "32", "--rounds", "1", "--limit-batch", "16"],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)  # the figures, for the closing note (pytest -s)
    assert "native int8 batch 1 / the engine alone at batch 16 (the card's limit)" in proc.stdout
    assert "native int8 / native fp16, batch 8" in proc.stdout
    assert "failed" not in proc.stdout
