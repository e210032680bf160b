"""The escalation gateway, ``edge-agent gateway``: the second program, next to Ollama.

It serves the agents' Describe calls over gRPC and asks the VLM. :mod:`.main` runs it until a stop
signal; :mod:`.config` is its typed config; :mod:`.server` the gRPC server with admission
(:mod:`.admission`, :mod:`.auth`), :mod:`.service` the Describe handler, :mod:`.vlm` and :mod:`.keeper`
Ollama's client, :mod:`.pool` (with :mod:`.poolconfig`) several Ollama servers behind one,
:mod:`.question` and :mod:`.templates` the prompt and the answer's schema,
:mod:`.images` the image checks; :mod:`.health`, :mod:`.stats`, :mod:`.metrics` and
:mod:`.supervision` what it reports (gRPC health, ``/metrics``, systemd).

What it shares with the agent's escalation client is the wire contract, :mod:`agent.wire`, and the circuit
breaker's pure logic (:mod:`agent.escalation.breaker`, no I/O), which the pool gives each Ollama server.
The camera-side agent never imports this package, so a camera box needs no ``ollama`` client.
"""
