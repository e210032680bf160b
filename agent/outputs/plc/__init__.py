"""Results to the line's PLC, the agent as a client of the PLC's own memory (Modbus TCP registers and coils, or
OPC UA nodes): every event's result written (``mode: write``), or the trigger/ready/result/ack/error handshake
(``mode: handshake``). See docs/plc.md.

Pure logic: :mod:`.regmap` (the signals and where they go), :mod:`.results` (an event as the values to write),
:mod:`.handshake` (the state machine). I/O: :mod:`.transport` (one small interface), :mod:`.modbus` and
:mod:`.opcua` (its two implementations), :mod:`.link` (one thread per PLC connection), :mod:`.gate` (a camera's
frames held back until a trigger), :mod:`.output` (all of it from the config, as one event listener).
"""
