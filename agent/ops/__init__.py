"""Operations: what tells the operator and systemd how the agent is doing. The systemd notification protocol
(:mod:`.notify`), the stage-progress rule the watchdog and ``/healthz`` share (:mod:`.stages`), the supervisor
thread that sends READY, WATCHDOG and STATUS (:mod:`.supervisor`), the agent's health and its ``/healthz``
document (:mod:`.health`), reaching a running agent (:mod:`.control`), ``edge-agent doctor``'s checks
(:mod:`.doctor`), and Prometheus metrics: the exposition written by prometheus_client (:mod:`.exposition`),
thread-safe histograms (:mod:`.histogram`), the local HTTP endpoint with ``/metrics`` and ``/healthz``
(:mod:`.endpoint`) and the agent's metric families (:mod:`.metrics`).

The agent's counters live in its own objects (grabber stats, inference counters, outbox stats), so the metrics
are read from them at scrape time and handed to prometheus_client as one collector per scrape, without its
global registry (several services in one process, as in the tests, stay separate).
"""
