"""The runtime wires the stages of the live path: the inspector (:mod:`.inspector`: frame -> prefilter -> triage
-> event), the inference threads (:mod:`.loop`), the event fan-out and its listeners (:mod:`.fanout`,
:mod:`.listeners`; the metrics listener is :class:`agent.ops.metrics.EventMetrics`), building the parts from the
config (:mod:`.building`), the service that starts, reloads (:mod:`.reloading`) and stops them
(:mod:`.service`), and the snapshots of its state that ops reads (:mod:`.snapshots`)."""
