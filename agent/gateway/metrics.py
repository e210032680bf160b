"""The gateway's metrics (``edge_gateway_*``), read from the running server at scrape time.

The numbers are plain ints and floats owned by the gateway's event loop (the admission
counters) or guarded by a lock (:class:`~agent.gateway.stats.CallStats`); reading them
from the HTTP thread is safe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.ops.exposition import Family, MetricType, render

if TYPE_CHECKING:
    from agent.gateway.pool import VlmPool
    from agent.gateway.server import GatewayServer

__all__ = ["GATEWAY_METRICS", "gateway_families", "render_gateway_metrics"]

GATEWAY_METRICS: dict[str, str] = {
    "edge_gateway_info": "Gateway version, Ollama URL and model (value 1)",
    "edge_gateway_serving": "1 while Ollama is reachable and has the model (the gRPC health status SERVING)",
    "edge_gateway_calls_total": "Describe calls by gRPC status code",
    "edge_gateway_client_calls_total": "Describe calls by client (token name, certificate name, or anonymous) "
                                       "and gRPC status code, refused ones included",
    "edge_gateway_client_admitted_calls": "Calls of each client admitted now (running or waiting)",
    "edge_gateway_event_loop_lag_max_seconds": "Longest the event loop ran late since the gateway started "
                                               "(a blocked loop delays every call and health probe)",
    "edge_gateway_event_loop_stalls_total": "Times the event loop ran 50 ms or more late",
    "edge_gateway_event_loop_lag_seconds": "How late each 20 ms tick of the event loop ran",
    "edge_gateway_running_calls": "VLM calls running now",
    "edge_gateway_queued_calls": "Calls waiting for a free VLM slot",
    "edge_gateway_parallel_limit": "limits.parallel: VLM calls at once",
    "edge_gateway_queue_limit": "limits.queue: calls that may wait",
    "edge_gateway_call_duration_seconds": "Time the gateway spent on a Describe call, queueing included",
    "edge_gateway_ollama_duration_seconds": "Ollama's own time for the answer (total_duration, both attempts)",
    "edge_gateway_ollama_server_outstanding_calls": "Calls outstanding at each Ollama server of the pool now",
    "edge_gateway_ollama_server_calls_total": "Calls to each Ollama server of the pool by outcome (ok, unavailable, "
                                              "timeout, ...; a call retried elsewhere counts at both servers)",
    "edge_gateway_ollama_server_up": "1 while the Ollama server's last health check passed",
    "edge_gateway_ollama_server_weight": "The Ollama server's weight (ollama.servers[].weight)",
    "edge_gateway_ollama_server_breaker": "The Ollama server's circuit breaker: 1 for its state (closed, open, "
                                          "half_open), 0 for the others",
    "edge_gateway_pool_retries_total": "Calls asked once more of another Ollama server after a server fault",
}


def _family(name: str, kind: MetricType) -> Family:
    return Family(name, kind, GATEWAY_METRICS[name])


def gateway_families(server: GatewayServer, model: str, ollama: str) -> list[Family]:
    from agent.core.version import agent_version

    admission = server.service.admission
    fams = [
        _family("edge_gateway_info", "gauge").add(1, version=agent_version(), model=model, ollama=ollama),
        _family("edge_gateway_serving", "gauge").add(1 if server.health.serving else 0),
    ]
    calls = _family("edge_gateway_calls_total", "counter")
    for code, n in sorted(server.stats.totals_by_code().items()):
        calls.add(n, code=code)
    fams.append(calls)
    by_client = _family("edge_gateway_client_calls_total", "counter")
    for (client, code), n in sorted(server.stats.totals_by_client().items()):
        by_client.add(n, client=client, code=code)
    fams.append(by_client)
    admitted = _family("edge_gateway_client_admitted_calls", "gauge")
    for client, n in sorted(dict(admission.by_client).items()):
        admitted.add(n, client=client)
    fams.append(admitted)
    fams.append(_family("edge_gateway_event_loop_lag_max_seconds", "gauge").add(round(server.loop_lag.max_s, 6)))
    fams.append(_family("edge_gateway_event_loop_stalls_total", "counter").add(server.loop_lag.stalls))
    fams.append(_family("edge_gateway_event_loop_lag_seconds", "histogram").add_histogram(
        server.loop_lag.histogram.snapshot()))
    fams.append(_family("edge_gateway_running_calls", "gauge").add(admission.running))
    fams.append(_family("edge_gateway_queued_calls", "gauge").add(admission.waiting))
    fams.append(_family("edge_gateway_parallel_limit", "gauge").add(admission.parallel))
    fams.append(_family("edge_gateway_queue_limit", "gauge").add(admission.queue))
    snaps = server.stats.latency.snapshots()
    fams.append(_family("edge_gateway_call_duration_seconds", "histogram").add_histogram(snaps["gateway"]))
    fams.append(_family("edge_gateway_ollama_duration_seconds", "histogram").add_histogram(snaps["ollama"]))
    if server.pool is not None:
        fams += _pool_families(server.pool)
    return fams


def _pool_families(pool: VlmPool) -> list[Family]:
    views = pool.servers()
    outstanding = _family("edge_gateway_ollama_server_outstanding_calls", "gauge")
    calls = _family("edge_gateway_ollama_server_calls_total", "counter")
    up = _family("edge_gateway_ollama_server_up", "gauge")
    weight = _family("edge_gateway_ollama_server_weight", "gauge")
    breaker = _family("edge_gateway_ollama_server_breaker", "gauge")
    for v in views:
        outstanding.add(v.outstanding, server=v.name)
        for outcome, n in sorted(v.outcomes.items()):
            calls.add(n, server=v.name, outcome=outcome)
        up.add(1 if v.healthy else 0, server=v.name)
        weight.add(v.weight, server=v.name)
        for state in ("closed", "open", "half_open"):
            breaker.add(1 if v.breaker == state else 0, server=v.name, state=state)
    retries = _family("edge_gateway_pool_retries_total", "counter").add(pool.retried)
    return [outstanding, calls, up, weight, breaker, retries]


def render_gateway_metrics(server: GatewayServer, model: str, ollama: str) -> str:
    return render(gateway_families(server, model, ollama))
