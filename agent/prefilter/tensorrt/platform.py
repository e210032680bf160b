"""The optional GPU libraries, imported only when a TensorRT path is used: ``tensorrt`` and a CUDA runtime
binding (``cuda-python``: ``cuda.bindings.runtime``, or ``cuda.cudart`` in releases before 12.6).

Every function here turns a missing library or device into a ModelError that says what to install.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.errors import ModelError

__all__ = ["Platform", "check_cuda", "load_cudart", "load_tensorrt", "probe_platform"]

_INSTALL = ("install the `tensorrt` extra (pip install 'edge-agent[tensorrt]', TensorRT 10 for CUDA 12), or on a "
            "Jetson use JetPack's TensorRT (apt install python3-libnvinfer; a venv made with "
            "--system-site-packages sees it)")


@dataclasses.dataclass(frozen=True)
class Platform:
    """What a plan is tied to, besides the model and how it was built."""

    gpu_name: str
    compute_capability: str  # "8.7"
    tensorrt_version: str
    device_id: int = 0


def load_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise ModelError(f"the TensorRT runtime needs the tensorrt Python module, which is not installed "
                         f"({exc}); {_INSTALL}") from None
    except OSError as exc:  # the module is there but its libnvinfer is not loadable
        raise ModelError(f"the tensorrt module is installed but its libraries do not load ({exc}); {_INSTALL}") \
            from None
    return tensorrt


def load_cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError:
            raise ModelError("the TensorRT runtime needs the CUDA runtime binding (cuda-python), which is not "
                             "installed; pip install 'edge-agent[tensorrt]' brings it") from None
    return runtime


def check_cuda(result: Any, what: str) -> Any:
    """cuda-python calls return ``(error, value...)``: the value(s), or ModelError naming ``what`` and the error."""
    err: Any = result[0] if isinstance(result, tuple) else result
    values: tuple[Any, ...] = result[1:] if isinstance(result, tuple) else ()
    code = int(getattr(err, "value", err))
    if code != 0:
        name = getattr(err, "name", str(err))
        raise ModelError(f"CUDA call {what} failed: {name} ({code}); check the NVIDIA driver (nvidia-smi) and "
                         "that the unit may open the GPU (DeviceAllow=char-nvidia*)")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def probe_platform(device_id: int = 0) -> Platform:
    """The GPU's name and compute capability and TensorRT's version; ModelError when any part is missing."""
    trt = load_tensorrt()
    cudart = load_cudart()
    count = check_cuda(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if not count:
        raise ModelError("no CUDA device is visible (cudaGetDeviceCount = 0); check nvidia-smi and the unit's "
                         "DeviceAllow=char-nvidia*")
    if device_id >= int(count):
        raise ModelError(f"model.gpu_device {device_id} does not exist: {count} CUDA device(s) visible")
    props = check_cuda(cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return Platform(gpu_name=name.strip("\x00 ").strip(), compute_capability=f"{props.major}.{props.minor}",
                    tensorrt_version=str(trt.__version__), device_id=device_id)
