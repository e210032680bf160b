"""ONNX Runtime provider selection on this CPU-only build: names in the config, the order kept, the
missing ones skipped with one warning, the TensorRT provider's options (precision, caches, batch
profile), and what ``doctor`` reports. The GPU runs are in test_tensorrt_gpu.py."""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from agent.config.models import DEFAULT_MODEL, DEFAULT_PREFILTER, AgentConfig, ModelConfig
from agent.config.providers import CPU, CUDA, TENSORRT, normalise_providers
from agent.errors import ModelError
from agent.prefilter.factory import open_prefilter
from agent.prefilter.onnx_session import GpuSettings, _ProviderPlan, open_session
from agent.prefilter.providers import (
    BatchShapes,
    Precision,
    choose_providers,
    provider_entries,
    resolve_precision,
    tensorrt_ep_options,
    tensorrt_quantization_problem,
)

CPU_BUILD = CPU in ort.get_available_providers() and TENSORRT not in ort.get_available_providers()


@pytest.mark.parametrize(("given", "expected"), [
    (["tensorrt", "cuda", "cpu"], [TENSORRT, CUDA, CPU]),
    (["CPUExecutionProvider"], [CPU]),
    (["Cuda", "CPU"], [CUDA, CPU]),
    (["TensorrtExecutionProvider", "cpu"], [TENSORRT, CPU]),
    (["auto"], ["auto"]),
])
def test_provider_names_short_or_full(given: list[str], expected: list[str]) -> None:
    assert normalise_providers(given) == expected
    assert ModelConfig(providers=given).providers == expected


@pytest.mark.parametrize(("given", "message"), [
    (["gpu"], "unknown provider 'gpu'; allowed: tensorrt, cuda, cpu, TensorrtExecutionProvider"),
    (["cpu", "CPUExecutionProvider"], "listed twice"),
    (["auto", "cpu"], "'auto' stands alone"),
    ([], "at least 1 item"),
])
def test_a_provider_that_does_not_exist_is_a_config_error(given: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelConfig(providers=given)


def test_config_file_error_names_field_line_and_allowed_values(tmp_path: pathlib.Path) -> None:
    from agent.config.loader import load_config
    from agent.errors import ConfigError

    path = tmp_path / "agent.yaml"
    path.write_text("model:\n  providers: [tensorrt, opencl]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ["model.providers (line 2): unknown provider 'opencl'; allowed: tensorrt, cuda, "
                                   "cpu, TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider, "
                                   "auto"]


def test_choose_keeps_order_and_warns_once_about_the_missing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.prefilter.providers"):
        assert choose_providers([TENSORRT, CUDA, CPU], [CUDA, CPU]) == [CUDA, CPU]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "TensorrtExecutionProvider" in warnings[0] and "using" in warnings[0]
    assert choose_providers(["auto"], [CPU, CUDA, TENSORRT]) == [TENSORRT, CUDA, CPU]
    assert choose_providers(["auto"], [CPU]) == [CPU]
    with pytest.raises(ModelError, match=r"none of the configured.*edge-agent\[gpu\]"):
        choose_providers([TENSORRT, CUDA], [CPU])


@pytest.mark.parametrize(("requested", "graph", "expected"), [
    ("auto", "int8", Precision("int8", True, False)),
    ("int8", "int8", Precision("int8", True, False)),
    ("fp16", "int8", Precision("int8+fp16", True, True)),
    ("auto", "fp32", Precision("fp32", False, False)),
    ("fp16", "fp32", Precision("fp16", False, True)),
    ("auto", "fp16", Precision("fp16", False, True)),
    ("fp32", "fp32", Precision("fp32", False, False)),
])
def test_precision_from_the_graph(requested: str, graph: str, expected: Precision) -> None:
    assert resolve_precision(requested, graph, "model m.onnx") == expected


def test_impossible_precisions_say_what_to_do() -> None:
    with pytest.raises(ModelError, match=r"m.onnx is not quantized.*no calibrators.*--flavour tensorrt"):
        resolve_precision("int8", "fp32", "model m.onnx")
    with pytest.raises(ModelError, match="needs the FP32 source model"):
        resolve_precision("fp32", "int8", "model m.onnx")
    with pytest.raises(ModelError, match="expected one of auto, int8, fp16, fp32"):
        resolve_precision("int4", "fp32", "model m.onnx")


def test_the_cpu_int8_flavour_is_not_for_tensorrt() -> None:
    problem = tensorrt_quantization_problem(onnx.load(str(DEFAULT_PREFILTER)))
    assert problem is not None and "unsigned 8-bit" in problem
    assert tensorrt_quantization_problem(onnx.load(str(DEFAULT_MODEL))) is None


def test_tensorrt_options_use_the_documented_names(tmp_path: pathlib.Path) -> None:
    shapes = BatchShapes("images", (3, 320, 320), 1, 4, 4)
    options = tensorrt_ep_options(Precision("int8+fp16", True, True), tmp_path, 1, shapes)
    assert options == {
        "device_id": 1, "trt_int8_enable": True, "trt_fp16_enable": True,
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(tmp_path),
        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(tmp_path),
        "trt_profile_min_shapes": "images:1x3x320x320", "trt_profile_opt_shapes": "images:4x3x320x320",
        "trt_profile_max_shapes": "images:4x3x320x320",
    }
    assert "trt_profile_min_shapes" not in tensorrt_ep_options(Precision("fp32", False, False), tmp_path)
    entries = provider_entries([TENSORRT, CUDA, CPU], options, 1)
    assert entries == [(TENSORRT, options), (CUDA, {"device_id": 1}), CPU]
    with pytest.raises(ModelError, match="needs its options"):
        provider_entries([TENSORRT], None)


def test_tensorrt_provider_plan_keys_its_cache_by_the_model_file(tmp_path: pathlib.Path) -> None:
    plan = _ProviderPlan(DEFAULT_MODEL, [TENSORRT, CUDA, CPU], GpuSettings("fp16", tmp_path, 0))
    single = plan.entries(1, "1.99.0")
    name, options = single[0]
    folder = pathlib.Path(options["trt_engine_cache_path"])
    assert name == TENSORRT and folder.is_dir() and folder.parent == tmp_path / "onnxruntime-trt"
    assert folder.name.startswith("conveyor-yolov8n-") and folder.name.endswith("-fp16-b1-ort1.99.0")
    assert options["trt_fp16_enable"] and not options["trt_int8_enable"]
    assert "trt_profile_max_shapes" not in options
    batched = plan.entries(4, "1.99.0")[0][1]
    assert batched["trt_profile_max_shapes"] == "images:4x3x320x320"
    assert batched["trt_engine_cache_path"].endswith("-b4-ort1.99.0")


def test_tensorrt_provider_is_dropped_for_the_cpu_int8_flavour(tmp_path: pathlib.Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.prefilter.onnx_session"):
        plan = _ProviderPlan(DEFAULT_PREFILTER, [TENSORRT, CUDA, CPU], GpuSettings(cache_dir=tmp_path))
    assert plan.entries(1, "x") == [(CUDA, {"device_id": 0}), CPU]
    assert len(caplog.records) == 1 and "TensorRT provider skipped" in caplog.records[0].getMessage()
    with pytest.raises(ModelError, match=r"cannot run on TensorRT.*--flavour tensorrt"):
        _ProviderPlan(DEFAULT_PREFILTER, [TENSORRT], GpuSettings(cache_dir=tmp_path))


def test_unwritable_engine_cache_is_a_model_error(tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    plan = _ProviderPlan(DEFAULT_MODEL, [TENSORRT, CPU], GpuSettings(cache_dir=blocker / "engines"))
    with pytest.raises(ModelError, match="not a writable directory.*engine_cache_dir"):
        plan.entries(1, "x")


@pytest.mark.skipif(not CPU_BUILD, reason="needs the CPU-only onnxruntime build (this one has TensorRT)")
def test_gpu_providers_missing_from_the_build_fall_back_to_the_cpu(tmp_path: pathlib.Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    config = ModelConfig(path=DEFAULT_PREFILTER, providers=["tensorrt", "cuda", "cpu"], engine_cache_dir=tmp_path,
                         max_batch=1)
    with caplog.at_level(logging.WARNING):
        model = open_prefilter(DEFAULT_PREFILTER, config)
    assert model.session.get_providers() == [CPU]  # type: ignore[union-attr]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "TensorrtExecutionProvider" in skipped[0] and "CUDAExecutionProvider" in skipped[0]
    result = model.infer(np.zeros((480, 640, 3), np.uint8))
    assert result.detections == ()
    session, _meta = open_session(DEFAULT_MODEL, ["auto"], 1)
    assert session.get_providers() == [CPU]


@pytest.mark.skipif(not CPU_BUILD, reason="needs the CPU-only onnxruntime build (this one has TensorRT)")
def test_doctor_reports_configured_and_used_providers(tmp_path: pathlib.Path) -> None:
    from agent.ops.doctor import _check_providers

    config = AgentConfig.model_validate({"model": {"providers": ["tensorrt", "cpu"]}})
    rows = {c.name: c for c in _check_providers(config)}
    assert rows["onnxruntime"].status == "WARN"
    assert "configured: TensorrtExecutionProvider, CPUExecutionProvider" in rows["onnxruntime"].detail
    assert "the model uses: CPUExecutionProvider" in rows["onnxruntime"].detail
    auto = {c.name: c for c in _check_providers(AgentConfig.model_validate({"model": {"providers": ["auto"]}}))}
    assert auto["onnxruntime"].status == "OK" and "configured: auto; the model uses: CPUExecutionProvider" in \
        auto["onnxruntime"].detail


def test_doctor_reports_the_tensorrt_runtime(tmp_path: pathlib.Path) -> None:
    from agent.ops.doctor import _check_providers

    config = AgentConfig.model_validate({"model": {"runtime": "tensorrt", "engine_cache_dir": str(tmp_path)}})
    rows = {c.name: c for c in _check_providers(config)}
    assert rows["onnxruntime"].status == "SKIP" and "model.runtime: tensorrt" in rows["onnxruntime"].detail
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert rows["tensorrt"].status == "FAIL" and "tensorrt Python module" in rows["tensorrt"].detail
        assert "edge-agent[tensorrt]" in rows["tensorrt"].todo
    else:
        assert rows["tensorrt"].status in ("OK", "FAIL")
