"""Load-time graph rewrites that keep a model's function and make it faster on ONNX Runtime. Pure logic.

YOLOv8's box decode (DFL) turns 16 bin logits per box side into a distance:
``Softmax`` over the bins, then a 1x1 ``Conv`` whose weights are 0..15. As
exported, the bins are axis 1 of a ``(1, 16, 4, anchors)`` tensor, and ONNX
Runtime's CPU Softmax over a non-last axis is slow: about 1 ms a frame at 320 px
on a 2-core box, a fifth of the INT8 model's whole run (the rest of the network
gets faster with INT8; this part does not). The same values come out of

    Transpose(0, 2, 3, 1) -> Softmax(last axis) -> MatMul(weights as 16x1) -> Reshape

in about 0.12 ms. ``fuse_dfl_softmax`` makes that replacement in memory when it
finds the pattern; the file on disk (and so the model id and any gate record)
is untouched, and a model without the pattern is left as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["dynamic_batch", "fuse_dfl_softmax"]


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _shapes(model: Any) -> dict[str, list[int]]:
    """Static shapes of every tensor shape inference can tell (dims that are not plain numbers are skipped)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    g = inferred.graph
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    return shapes


def _is_plain_1x1(conv: Any) -> bool:
    return (all(v == 1 for v in _attr(conv, "strides", [1, 1]))
            and all(v == 1 for v in _attr(conv, "dilations", [1, 1]))
            and all(v == 0 for v in _attr(conv, "pads", [0, 0, 0, 0])) and _attr(conv, "group", 1) == 1
            and _attr(conv, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))


def fuse_dfl_softmax(model: Any) -> int:
    """Rewrite every ``Softmax(axis=1) -> 1x1 Conv to one channel`` pair of ``model`` (an onnx ModelProto,
    changed in place) as Transpose -> Softmax(last axis) -> MatMul -> Reshape; returns how many were rewritten."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:  # before opset 13 Softmax flattens from its axis on: a different function
        return 0
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    shapes: dict[str, list[int]] | None = None
    rewritten = 0
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        users = consumers.get(softmax.output[0], [])
        if len(users) != 1 or users[0].op_type != "Conv" or softmax.output[0] in outputs:
            continue
        conv = users[0]
        if conv.input[0] != softmax.output[0] or conv.input[1] not in inits:
            continue
        if len(conv.input) > 2 and conv.input[2]:
            continue  # a bias: not the DFL pattern
        weight = numpy_helper.to_array(inits[conv.input[1]])
        if weight.ndim != 4 or weight.shape[0] != 1 or weight.shape[2:] != (1, 1) or not _is_plain_1x1(conv):
            continue
        if shapes is None:
            shapes = _shapes(model)
        in_shape, out_shape = shapes.get(softmax.input[0]), shapes.get(conv.output[0])
        if in_shape is None or out_shape is None or len(in_shape) != 4 or in_shape[1] != weight.shape[1]:
            continue
        if _attr(softmax, "axis", -1) not in (1, 1 - len(in_shape)):
            continue
        prefix = f"{softmax.name or softmax.output[0]}/dfl_last_axis"
        w_name, s_name = f"{prefix}/weights", f"{prefix}/shape"
        graph.initializer.append(numpy_helper.from_array(weight.reshape(weight.shape[1], 1).astype(weight.dtype),
                                                         w_name))
        graph.initializer.append(numpy_helper.from_array(np.asarray(out_shape, dtype=np.int64), s_name))
        new_nodes = [
            onnx.helper.make_node("Transpose", [softmax.input[0]], [f"{prefix}/t"], perm=[0, 2, 3, 1],
                                  name=f"{prefix}/Transpose"),
            onnx.helper.make_node("Softmax", [f"{prefix}/t"], [f"{prefix}/p"], axis=-1, name=f"{prefix}/Softmax"),
            onnx.helper.make_node("MatMul", [f"{prefix}/p", w_name], [f"{prefix}/d"], name=f"{prefix}/MatMul"),
            onnx.helper.make_node("Reshape", [f"{prefix}/d", s_name], [conv.output[0]], name=f"{prefix}/Reshape"),
        ]
        position = list(graph.node).index(softmax)
        graph.node.remove(softmax)
        graph.node.remove(conv)
        if len(consumers.get(conv.input[1], [])) == 1:
            graph.initializer.remove(inits.pop(conv.input[1]))
        for offset, node in enumerate(new_nodes):
            graph.node.insert(position + offset, node)
        rewritten += 1
    return rewritten


def dynamic_batch(model: Any) -> int:
    """Give ``model`` (changed in place) a free batch dimension; returns how many Reshape shapes were freed.

    Exporters write the batch size (1) into the graph: into the input and output shapes and into
    every Reshape's target shape, e.g. YOLOv8's head reshapes to ``(1, 8, -1)``. A Reshape target
    of 0 copies that dimension from its input instead, so every target that starts with 1 gets a 0
    there. That is right only when each Reshape's first dimension is the batch, which holds for the
    YOLOv8 layout but not for every graph: the caller checks the result (a batch of N copies must give
    N copies of the single output) before it batches anything. Returns 0 (and changes nothing) when
    the graph has no fixed batch of 1 or a Reshape it cannot read.
    """
    from onnx import numpy_helper

    graph = model.graph
    first = graph.input[0].type.tensor_type.shape.dim if graph.input else []
    if not first or not first[0].HasField("dim_value") or first[0].dim_value != 1:
        return 0
    inits = {t.name: t for t in graph.initializer}
    targets = []
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        if _attr(node, "allowzero", 0) == 1 or node.input[1] not in inits:
            return 0  # a computed target shape, or 0 meaning zero: leave the graph alone
        shape = numpy_helper.to_array(inits[node.input[1]])
        if shape.ndim != 1 or shape.size == 0:
            return 0
        targets.append((node, shape))
    users: dict[str, int] = {}
    for node, _shape in targets:
        users[node.input[1]] = users.get(node.input[1], 0) + 1
    for node, shape in targets:
        if int(shape[0]) != 1:
            continue
        freed = shape.copy()
        freed[0] = 0
        name = node.input[1] if users[node.input[1]] == 1 else f"{node.input[1]}/batch_{node.output[0]}"
        replacement = numpy_helper.from_array(freed.astype(shape.dtype), name)
        if name in inits:
            inits[name].CopyFrom(replacement)
        else:
            graph.initializer.append(replacement)
            node.input[1] = name
    used = {name for node in graph.node for name in node.input}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)  # shared targets replaced per node
    for value in list(graph.input[:1]) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del graph.value_info[:]  # inferred shapes with the old batch of 1: onnxruntime infers them again
    return sum(1 for _node, shape in targets if int(shape[0]) == 1)
