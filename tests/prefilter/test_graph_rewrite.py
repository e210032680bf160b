"""Load-time graph rewrites (agent.prefilter.graph_rewrite): same outputs, faster decode."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from agent.config.models import DEFAULT_MODEL
from agent.prefilter.graph_rewrite import fuse_dfl_softmax


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, feed)]


def test_the_shipped_detectors_decode_softmax_moves_to_the_last_axis_and_gives_the_same_output() -> None:
    original = onnx.load(str(DEFAULT_MODEL))
    rewritten = onnx.load(str(DEFAULT_MODEL))
    assert fuse_dfl_softmax(rewritten) == 1
    softmaxes = [n for n in rewritten.graph.node if n.op_type == "Softmax"]
    assert [helper.get_attribute_value(a) for n in softmaxes for a in n.attribute if a.name == "axis"] == [-1]
    assert not any(n.name == "/model.22/dfl/conv/Conv" for n in rewritten.graph.node)
    onnx.checker.check_model(rewritten)
    x = np.random.default_rng(3).random((1, 3, 320, 320), dtype=np.float32)
    (before,), (after,) = _run(original, {"images": x}), _run(rewritten, {"images": x})
    assert after.shape == before.shape == (1, 8, 2100)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-3)  # boxes in pixels, scores in 0..1
    assert fuse_dfl_softmax(rewritten) == 0  # nothing left to rewrite


def _softmax_conv(opset: int, bias: bool = False, axis: int = 1) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1), "w")
    inits = [weight]
    conv_inputs = ["p", "w"]
    if bias:
        inits.append(numpy_helper.from_array(np.ones(1, np.float32), "b"))
        conv_inputs.append("b")
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["p"], axis=axis, name="softmax"),
         helper.make_node("Conv", conv_inputs, ["y"], name="conv")],
        "dfl", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4, 50])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 50])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_a_lone_dfl_pattern_is_rewritten_to_the_same_function() -> None:
    model = _softmax_conv(17)
    x = np.random.default_rng(1).normal(size=(1, 16, 4, 50)).astype(np.float32)
    (before,) = _run(model, {"x": x})
    assert fuse_dfl_softmax(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Transpose", "Softmax", "MatMul", "Reshape"]
    assert [i.name for i in model.graph.initializer if i.name == "w"] == []  # the unused conv weight is gone
    (after,) = _run(model, {"x": x})
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_look_alikes_are_left_alone() -> None:
    for model in (_softmax_conv(11),  # before opset 13 Softmax flattens from its axis: another function
                  _softmax_conv(17, bias=True),  # a biased conv is not the DFL
                  _softmax_conv(17, axis=2)):  # softmax over another axis
        nodes = [n.op_type for n in model.graph.node]
        assert fuse_dfl_softmax(model) == 0
        assert [n.op_type for n in model.graph.node] == nodes


def test_a_free_batch_gives_each_frame_what_it_gets_alone() -> None:
    from agent.prefilter.graph_rewrite import dynamic_batch

    for path in (DEFAULT_MODEL, DEFAULT_MODEL.with_name(DEFAULT_MODEL.stem + ".int8.onnx")):
        model = onnx.load(str(path))
        fuse_dfl_softmax(model)
        assert dynamic_batch(model) > 0
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        x = np.random.default_rng(5).random((3, 3, 320, 320), dtype=np.float32)
        (together,) = _run(model, {"images": x})
        alone = np.concatenate([_run(model, {"images": x[i:i + 1]})[0] for i in range(3)])
        assert together.shape == (3, 8, 2100)
        np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-3)


def test_a_graph_whose_reshapes_are_not_per_frame_runs_one_frame_per_call(tmp_path: pathlib.Path) -> None:
    """(1, 2, 3) -> Transpose -> (2, 1, 3) -> Reshape (1, 6): freeing the 1 would mix frames; the load-time
    check sees it and the model keeps its batch of 1."""
    from agent.prefilter.onnx_session import open_session

    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
         helper.make_node("Reshape", ["t", "shape"], ["y"])],
        "mixes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        initializer=[numpy_helper.from_array(np.array([1, 6], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "mixes.onnx"
    onnx.save(model, str(path))
    session, _meta = open_session(path, ["CPUExecutionProvider"], 1, max_batch=4)
    assert session.get_inputs()[0].shape == [1, 2, 3]
