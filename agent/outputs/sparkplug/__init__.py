"""Sparkplug B 3.0 output: the agent as an edge node, each camera a device (docs/sparkplug.md).

Pure parts: :mod:`.metrics` (what a tag event says as metrics), :mod:`.payloads` (the protobuf messages),
:mod:`.session` (seq, bdSeq, the primary host's STATE). I/O: :mod:`.node` (the MQTT session and its sender
thread), fed by the runtime's event fan-out.
"""
