"""Prometheus metrics: a small text-format exposition (:mod:`.exposition`), thread-safe histograms
(:mod:`.histogram`), the local HTTP endpoint with ``/metrics`` and ``/healthz`` (:mod:`.server`), and
what the agent (:mod:`.agent`) and the gateway (:mod:`.gateway`) expose.

No prometheus_client at run time: the agent's counters already live in its own objects (grabber
stats, inference counters, outbox stats), so the metrics are read from them at scrape time, which a
few dozen lines of exposition do without a global registry (several services in one process, as in
the tests, stay separate).
"""
