"""The native TensorRT runtime (``model.runtime: tensorrt``, ``edge-agent models build-engine``).

For boxes without onnxruntime-gpu, e.g. a Jetson with JetPack's TensorRT. The modules that
touch the GPU (``builder``, ``runner``, ``platform``) import ``tensorrt`` and the CUDA binding
only when called; the cache key (``engine_key``), the cache (``engine_cache``) and the model
preparation (``engine.prepare_model``) are plain Python and tested on the CPU.
"""
