"""A gateway that dies with calls in progress (SIGKILL: its connections reset) costs those calls nothing: the
agent's channel (round_robin over a list of two gateways, health checking, UNAVAILABLE retried once within the
call's deadline, agent.escalation.client) asks the other gateway, and every call is answered in time. Two real
``edge-agent gateway`` processes in front of one fake Ollama."""

from __future__ import annotations

import asyncio
import json
import pathlib

from agent.config.escalation import EscalationConfig
from agent.escalation.client import CallResult, EscalationClient
from tests.escalation import samples
from tests.fakes.ollama import FakeOllama
from tests.fleet.harness import GatewayProcess, wait_for_a_call_through


def gateway_config(tmp_path: pathlib.Path, index: int, ollama_url: str) -> pathlib.Path:
    path = tmp_path / f"gateway{index}.yaml"
    path.write_text(json.dumps({"listen": "127.0.0.1:0", "ollama": {"host": ollama_url, "connect_timeout_s": 1},
                                "limits": {"parallel": 8, "queue": 8, "per_client": 16}, "health_interval_s": 0.5,
                                "summary_interval_s": 0, "logging": {"level": "warning"},
                                "metrics": {"enabled": False}}), encoding="utf-8")
    return path


def test_a_gateway_killed_mid_call_costs_its_calls_nothing(tmp_path: pathlib.Path) -> None:
    with FakeOllama(parallel=8) as fake:
        gateways = [GatewayProcess(gateway_config(tmp_path, i, fake.url)) for i in (1, 2)]
        try:
            config = EscalationConfig(gateway=[gw.wait_listening(60.0) for gw in gateways])

            async def run() -> tuple[list[CallResult], int, list[CallResult]]:
                client = EscalationClient.connect(config)
                try:
                    # both gateways connected and SERVING: quick answers, spread by round_robin
                    warm = [await client.describe(samples.request(), 5.0) for _ in range(20)]
                    fake.delay_s = 1.0
                    calls = [asyncio.create_task(client.describe(samples.request(), 5.0)) for _ in range(4)]
                    in_flight = await asyncio.to_thread(wait_for_a_call_through, gateways[1], {"ollama": fake}, 3.0)
                    gateways[1].kill()
                    return warm, in_flight, list(await asyncio.gather(*calls))
                finally:
                    await client.close()

            warm, in_flight, results = asyncio.run(run())
        finally:
            for gw in gateways:
                gw.stop()
    assert all(r.status == "answered" for r in warm)
    assert in_flight >= 1  # the killed gateway had calls in progress at Ollama
    assert [r.status for r in results] == ["answered"] * 4, [r.reason for r in results]
    # asked again at the other gateway: each answered within its 5 s deadline, after about 1 s + 1 s
    assert max(r.latency_ms for r in results) < 4000, [r.latency_ms for r in results]
    assert len(fake.chat_requests()) >= 20 + 4 + in_flight
