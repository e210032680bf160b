"""Prometheus metrics: the text-format exposition, written by prometheus_client with its standard process
metrics (:mod:`.exposition`), thread-safe histograms (:mod:`.histogram`), the local HTTP endpoint with
``/metrics`` and ``/healthz`` (:mod:`.server`), and what the agent (:mod:`.agent`) and the gateway
(:mod:`.gateway`) expose.

The agent's counters already live in its own objects (grabber stats, inference counters, outbox stats),
so the metrics are read from them at scrape time and handed to prometheus_client as one collector per
scrape, without its global registry (several services in one process, as in the tests, stay separate).
"""
