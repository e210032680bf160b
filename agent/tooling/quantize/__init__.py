"""INT8 quantization behind an accuracy gate: the ONNX Runtime QDQ quantization of a graph
(:mod:`.int8`), the calibration frames (:mod:`.calibration`) and the whole ``models quantize``
workflow with its gate record (:mod:`.workflow`)."""
