"""Run a TensorRT plan behind the same small surface as an ONNX Runtime session. Needs a GPU.

:class:`TensorRTSession` has ``get_inputs``, ``get_outputs``, ``run`` and ``get_providers``,
so the detector and classifier (and their decode) take it unchanged. Everything is
allocated once, for the profile's largest batch: pinned host buffers, device buffers, one
CUDA stream and one execution context. ``run`` copies the input into the pinned buffer, then
host-to-device, ``execute_async_v3``, device-to-host and one stream synchronize; it returns
each output's first ``n`` rows as a fresh array (a caller may keep it). Not thread-safe: one
inference thread owns a session, as with the detector itself.

A plan TensorRT refuses to deserialize (built by another version, truncated) raises
:class:`PlanRejected`, so the caller can drop it from the cache and build again.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.errors import ModelError
from agent.prefilter.tensorrt.platform import check_cuda, load_cudart, load_tensorrt

__all__ = ["PlanRejected", "TensorRTSession"]

log = logging.getLogger(__name__)


class PlanRejected(ModelError):
    """TensorRT could not deserialize the plan."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list[Any]  # the batch dimension is "batch" when the engine takes several


@dataclasses.dataclass
class _Binding:
    name: str
    dtype: np.dtype[Any]
    max_shape: tuple[int, ...]
    host: np.ndarray  # pinned, for the largest batch
    device: int
    host_ptr: int
    nbytes: int


class TensorRTSession:
    def __init__(self, plan: bytes, device_id: int = 0, label: str = "") -> None:
        self._trt = load_tensorrt()
        self._cudart = load_cudart()
        cudart = self._cudart
        check_cuda(cudart.cudaSetDevice(device_id), "cudaSetDevice")
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._runtime = self._trt.Runtime(self._logger)
        try:
            self._engine = self._runtime.deserialize_cuda_engine(plan)
        except Exception:  # noqa: BLE001 - some TensorRT versions raise instead of returning None
            self._engine = None
        if self._engine is None:
            raise PlanRejected(f"TensorRT {self._trt.__version__} could not load the engine {label} (built by another "
                               "TensorRT version or for another GPU, or damaged)")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ModelError("TensorRT could not create an execution context (GPU memory?)")
        self._stream = check_cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._bindings: list[_Binding] = []
        self._allocated: list[tuple[str, int]] = []
        try:
            self._allocate()
        except BaseException:
            self.close()
            raise
        self._batch = -1
        self.provider_label = f"TensorRT {self._trt.__version__} (native)"

    # -- the ONNX Runtime-like surface --------------------------------------------------------------------

    def get_inputs(self) -> Sequence[TensorSpec]:
        return self._specs(self._inputs)

    def get_outputs(self) -> Sequence[TensorSpec]:
        return self._specs(self._outputs)

    def get_providers(self) -> list[str]:
        return [self.provider_label]

    def run(self, output_names: list[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        trt_in = self._inputs[0]
        if set(input_feed) != {trt_in.name}:
            raise ModelError(f"TensorRT engine input is {trt_in.name!r}, got {sorted(input_feed)}")
        x = input_feed[trt_in.name]
        n = int(x.shape[0])
        if x.shape[1:] != trt_in.max_shape[1:] or not 1 <= n <= self.max_batch:
            raise ModelError(f"TensorRT engine takes {trt_in.name} of shape (1..{self.max_batch}, "
                             f"{', '.join(map(str, trt_in.max_shape[1:]))}), got {tuple(x.shape)}")
        cudart = self._cudart
        self._set_batch(n)
        rows_in = trt_in.host[:n]
        np.copyto(rows_in, x, casting="same_kind")
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cuda(cudart.cudaMemcpyAsync(trt_in.device, trt_in.host_ptr, rows_in.nbytes, h2d, self._stream),
                   "cudaMemcpyAsync (input)")
        if not self._context.execute_async_v3(int(self._stream)):
            raise ModelError("TensorRT execute_async_v3 failed (its log above says why)")
        wanted = self._outputs if output_names is None else [self._output(name) for name in output_names]
        results: list[np.ndarray] = []
        for out in wanted:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(out.name))
            rows = out.host.reshape(-1)[: int(np.prod(shape))].reshape(shape)
            check_cuda(cudart.cudaMemcpyAsync(out.host_ptr, out.device, rows.nbytes, d2h, self._stream),
                       "cudaMemcpyAsync (output)")
            results.append(rows)
        check_cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return [r.copy() for r in results]

    def run_resident(self, n: int) -> None:
        """The engine alone, batch ``n``, on whatever its device buffers hold: no copies, no decode, one stream
        synchronize. What the GPU itself takes for this model (scripts/bench_gpu.py)."""
        if not 1 <= n <= self.max_batch:
            raise ModelError(f"batch {n} is outside this engine's profile (1..{self.max_batch})")
        self._set_batch(n)
        if not self._context.execute_async_v3(int(self._stream)):
            raise ModelError("TensorRT execute_async_v3 failed (its log above says why)")
        check_cuda(self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def _set_batch(self, n: int) -> None:
        if n != self._batch:
            trt_in = self._inputs[0]
            shape = (n, *trt_in.max_shape[1:])
            if not self._context.set_input_shape(trt_in.name, shape):
                raise ModelError(f"TensorRT refused input shape {shape} (outside the engine's batch profile)")
            self._batch = n

    # -- setup and teardown -------------------------------------------------------------------------------

    @property
    def max_batch(self) -> int:
        return int(self._inputs[0].max_shape[0])

    def _allocate(self) -> None:
        trt, engine, cudart = self._trt, self._engine, self._cudart
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ModelError(f"TensorRT engine has {len(inputs)} inputs; the prefilter runs models with one image "
                             "input")
        declared = tuple(int(d) for d in engine.get_tensor_shape(inputs[0]))
        # a free batch dimension (-1): the profile's largest batch, which every buffer is sized for
        max_in = tuple(int(d) for d in engine.get_tensor_profile_shape(inputs[0], 0)[2]) if -1 in declared \
            else declared
        if not self._context.set_input_shape(inputs[0], max_in):
            raise ModelError(f"TensorRT refused its own largest input shape {max_in}")
        for name in names:
            shape = max_in if name == inputs[0] else tuple(int(d) for d in self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ModelError(f"TensorRT engine output {name} has a data-dependent shape {shape}; expected "
                                 "the YOLOv8/classifier layout")
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            host_ptr = int(check_cuda(cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
            self._allocated.append(("host", host_ptr))
            device = int(check_cuda(cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._allocated.append(("device", device))
            ctype = ctypes.POINTER(np.ctypeslib.as_ctypes_type(dtype))
            host = np.ctypeslib.as_array(ctypes.cast(host_ptr, ctype), shape)
            self._bindings.append(_Binding(name, dtype, shape, host, device, host_ptr, nbytes))
            if not self._context.set_tensor_address(name, device):
                raise ModelError(f"TensorRT refused the buffer address for {name}")
        self._inputs = [b for b in self._bindings if b.name in inputs]
        self._outputs = [b for b in self._bindings if b.name not in inputs]
        if self._inputs[0].dtype != np.float32:
            raise ModelError(f"TensorRT engine input is {self._inputs[0].dtype}; the prefilter feeds float32")

    def _specs(self, bindings: list[_Binding]) -> list[TensorSpec]:
        dynamic = self.max_batch > 1
        return [TensorSpec(b.name, ["batch" if dynamic else b.max_shape[0], *b.max_shape[1:]]) for b in bindings]

    def _output(self, name: str) -> _Binding:
        for out in self._outputs:
            if out.name == name:
                return out
        raise ModelError(f"TensorRT engine has no output {name!r} (it has {[o.name for o in self._outputs]})")

    def close(self) -> None:
        """Free the GPU and pinned buffers and the stream (also done when the session is collected)."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for kind, ptr in reversed(getattr(self, "_allocated", [])):
            (cudart.cudaFreeHost if kind == "host" else cudart.cudaFree)(ptr)
        self._allocated = []
        self._bindings = []
        stream = getattr(self, "_stream", None)
        if stream is not None:
            cudart.cudaStreamDestroy(stream)
            self._stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the CUDA context may already be gone
            log.debug("TensorRT session cleanup failed", exc_info=True)
