"""model.precision bf16 on OpenVINO: the FP32 detector's float layers in BF16 give the f32 boxes within a stated
tolerance, a Q/DQ model keeps its INT8 layers, f32 and bf16 blobs are cached apart and read back as
compiled, a CPU without BF16 runs f32 and says so once, and the other runtimes refuse bf16 by name.

Tolerance (measured on the 20 golden frames, conf 0.25, this box's AVX512_BF16): the same number of boxes per
frame, each with a twin of the same class with IoU >= 0.95 (seen 0.980) and confidence within 0.05 (seen 0.020);
mean IoU >= 0.98 (seen 0.989).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'edge-agent[openvino]')")

from agent.config.models import DEFAULT_MODEL, DEFAULT_PREFILTER, ModelConfig  # noqa: E402
from agent.prefilter import openvino_session  # noqa: E402
from tests.prefilter.test_openvino import cache_dir, frames, opened, pair_up  # noqa: E402,F401

needs_bf16 = pytest.mark.skipif("BF16" not in openvino_session.cpu_capabilities(openvino_session.load_openvino()),
                                reason="this CPU has no BF16 (OpenVINO OPTIMIZATION_CAPABILITIES)")


def conv_precisions(prefilter: Any) -> Counter[str]:
    """How many of the compiled model's convolutions run in each precision (u8 = INT8, bf16, f32)."""
    ops = prefilter.session._compiled.get_runtime_model().get_ops()
    return Counter(str(op.get_rt_info()["runtimePrecision"].astype(str)) for op in ops
                   if op.get_rt_info()["layerType"].astype(str) == "Convolution")


@needs_bf16
def test_bf16_boxes_equal_f32_within_bf16_rounding(frames, cache_dir):  # noqa: F811
    f32 = opened(DEFAULT_MODEL, "openvino", cache_dir)
    bf16 = opened(DEFAULT_MODEL, "openvino", cache_dir, precision="bf16")
    assert (f32.session.float_precision, bf16.session.float_precision) == ("f32", "bf16")
    assert bf16.session.get_providers()[0].endswith(" CPU (bf16)")
    assert set(conv_precisions(bf16)) == {"bf16"} and set(conv_precisions(f32)) == {"f32"}
    pairs = [p for f in frames for p in pair_up(f32.infer(f), bf16.infer(f))]
    assert len(pairs) >= 15
    assert min(iou for iou, _ in pairs) >= 0.95
    assert float(np.mean([iou for iou, _ in pairs])) >= 0.98
    assert max(dc for _, dc in pairs) < 0.05


@needs_bf16
def test_a_qdq_model_keeps_its_int8_layers_in_bf16(cache_dir):  # noqa: F811
    convs = conv_precisions(opened(DEFAULT_PREFILTER, "openvino", cache_dir, precision="bf16"))
    assert convs["u8"] >= 60 and set(convs) == {"u8", "bf16"}  # the unquantized head convolutions take bf16


@needs_bf16
def test_f32_and_bf16_blobs_are_cached_apart_and_read_back_as_compiled(frames, tmp_path):  # noqa: F811
    first = {p: opened(DEFAULT_MODEL, "openvino", tmp_path, precision=p, max_batch=1,
                    input_size="square") for p in ("auto", "bf16")}
    folders = sorted((tmp_path / "openvino").iterdir())
    assert [f.name.endswith("-bf16") for f in folders] == [False, True]
    assert all(any(b.suffix == ".blob" for b in f.iterdir()) for f in folders)
    tensor = first["auto"].prepare(frames[10:11], first["auto"].new_input())[0]
    for precision in ("auto", "bf16"):  # read back from the cache: each blob is its own precision
        again = opened(DEFAULT_MODEL, "openvino", tmp_path, precision=precision, max_batch=1, input_size="square")
        assert again.session.float_precision == first[precision].session.float_precision
        assert np.array_equal(again.forward(tensor), first[precision].forward(tensor))
    assert not np.array_equal(first["auto"].forward(tensor), first["bf16"].forward(tensor))


def test_a_cpu_without_bf16_runs_f32_and_says_so_once(monkeypatch, cache_dir, caplog):  # noqa: F811
    monkeypatch.setattr(openvino_session, "cpu_capabilities", lambda ov: ["FP32", "INT8", "EXPORT_IMPORT"])
    monkeypatch.setattr(openvino_session, "_NO_BF16_SAID", [])
    with caplog.at_level(logging.WARNING, logger="agent.prefilter.openvino_session"):
        first = opened(DEFAULT_MODEL, "openvino", cache_dir, precision="bf16")
        opened(DEFAULT_MODEL, "openvino", cache_dir, precision="bf16", max_batch=1)
    assert first.session.float_precision == "f32"
    said = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    assert len(said) == 1 and "no BF16" in said[0] and "f32" in said[0], said


@pytest.mark.parametrize("runtime", ["onnxruntime", "tensorrt", "auto"])
def test_other_runtimes_refuse_bf16_naming_what_they_take(runtime):
    with pytest.raises(ValueError, match=rf"precision bf16 runs on runtime openvino only.*runtime {runtime} takes "
                                         r"precision auto, int8, fp16 or fp32"):
        ModelConfig(runtime=runtime, precision="bf16")


def test_auto_keeps_f32_and_fp16_asks_for_f16():
    ov = openvino_session.load_openvino()
    hints = {p: openvino_session.float_precision(ov, ModelConfig(runtime="openvino", precision=p))
             for p in ("auto", "fp32", "int8", "fp16")}
    assert hints == {"auto": "f32", "fp32": "f32", "int8": "f32", "fp16": "f16"}
