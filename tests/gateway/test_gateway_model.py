"""The gateway in front of a real Ollama's life, played by the fake in its cold-load and small-context
modes: the model is loaded at start and after an Ollama restart apart from any call, health says
"loading" meanwhile, calls wait for the load within their deadline or say "loading"; prompts are fitted
into the model's context by leaving crops out (and the answer says so); permanent failures are
FAILED_PRECONDITION and NOT_SERVING, not retried."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import grpc
import pytest

from agent.config.escalation import EscalationConfig
from agent.escalation.client import HEALTH_REASON_KEY, CallResult, EscalationClient
from agent.gateway import keeper
from agent.gateway.health import REASON_KEY
from agent.gateway.server import SERVICE_NAME
from agent.wire import escalation_pb2 as pb
from agent.wire import escalation_pb2_grpc as pb_grpc
from tests.escalation import samples
from tests.fakes.gateway import GatewayThread
from tests.fakes.gateway_fixtures import StartGateway, health_status, wait_for_health
from tests.fakes.ollama import FakeOllama
from tests.fakes.ollama_runner import out_of_memory

Channels = Callable[..., grpc.Channel]
LOAD_S = 5.0  # well past the health check's quick wait (1 s here) and a short call: the gateway starts "loading"


def crops(count: int) -> list[pb.Crop]:
    return [pb.Crop(image=samples.png(), label="hole", confidence=0.4,
                    box=pb.Box(x1=10.0 * i, y1=10, x2=10.0 * i + 50, y2=60)) for i in range(count)]


def reason(gw: GatewayThread) -> str:
    assert gw.server is not None
    return gw.server.health.reason


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        time.sleep(0.02)
    return predicate()


# -- cold load -------------------------------------------------------------------------------------


def test_a_cold_load_is_the_gateways_calls_wait_for_it_or_say_loading(start_gateway: StartGateway,
                                                                       channels: Channels) -> None:
    with FakeOllama(load_s=LOAD_S) as fake:
        gw = start_gateway(fake)  # returns while the model still loads
        channel = channels(gw.address)
        stub = pb_grpc.EscalationStub(channel)
        assert health_status(channel, SERVICE_NAME) == "NOT_SERVING"
        assert reason(gw).startswith("loading: Ollama is loading model 'llava:7b'")
        (preload,) = fake.load_requests()  # Ollama's preload, with the calls' num_ctx and keep_alive
        assert preload.body["messages"] == [] and preload.body["keep_alive"] == "30m"
        assert preload.body["options"] == {"num_ctx": 4096}

        # a short deadline: told "loading" before it passes, not DEADLINE_EXCEEDED
        with pytest.raises(grpc.RpcError) as short:
            stub.Describe(samples.request(), timeout=1.5)  # told 0.3 s before its deadline
        assert short.value.code() == grpc.StatusCode.UNAVAILABLE
        assert short.value.details().startswith("loading: Ollama is loading model 'llava:7b'")
        # a deadline longer than the rest of the load: waits for it and is answered
        assert stub.Describe(samples.request(), timeout=LOAD_S + 5).verdict == pb.VERDICT_DEFECT
        assert wait_for_health(channel, "SERVING", SERVICE_NAME) == "SERVING"
        state = fake.model("llava:7b")
        assert (state.loads, state.aborted_loads) == (1, 0)  # no call's deadline aborted the load
        assert len(fake.chat_requests()) == 1  # the "loading" call never reached Ollama
        assert stub.Describe(samples.request(), timeout=1).verdict == pb.VERDICT_DEFECT  # later calls answer


def test_after_an_ollama_restart_the_model_is_loaded_again(start_gateway: StartGateway, channels: Channels) -> None:
    with FakeOllama() as fake:
        gw = start_gateway(fake)
        channel = channels(gw.address)
        stub = pb_grpc.EscalationStub(channel)
        assert stub.Describe(samples.request(), timeout=5).attempts == 1
        fake.load_s = LOAD_S
        fake.restart()  # every model unloaded; the health poll (0.1 s) finds it not in /api/ps
        assert wait_until(lambda: reason(gw).startswith("loading:"))
        assert health_status(channel, SERVICE_NAME) == "NOT_SERVING"
        with pytest.raises(grpc.RpcError) as short:
            stub.Describe(samples.request(), timeout=1.5)  # told 0.3 s before its deadline
        assert short.value.code() == grpc.StatusCode.UNAVAILABLE and "loading:" in short.value.details()
        assert stub.Describe(samples.request(), timeout=LOAD_S + 5).verdict == pb.VERDICT_DEFECT
        assert wait_for_health(channel, "SERVING", SERVICE_NAME) == "SERVING"
        assert fake.model("llava:7b").loads == 2 and fake.model("llava:7b").aborted_loads == 0


def test_keep_alive_running_out_is_a_reload_not_a_cold_call(start_gateway: StartGateway,
                                                            channels: Channels) -> None:
    with FakeOllama() as fake:
        gw = start_gateway(fake, ollama={"keep_alive": "300ms"})
        stub = pb_grpc.EscalationStub(channels(gw.address))
        assert stub.Describe(samples.request(), timeout=5).attempts == 1
        # the model unloads 0.3 s after each request; the health poll loads it again
        assert wait_until(lambda: fake.model("llava:7b").loads >= 2)
        assert len(fake.chat_requests()) == 1


@pytest.mark.parametrize("keep_alive", ["0", "0s"])
def test_keep_alive_zero_is_not_fought(start_gateway: StartGateway, channels: Channels, keep_alive: str) -> None:
    with FakeOllama() as fake:  # the operator wants the model unloaded after each call: no preload
        gw = start_gateway(fake, ollama={"keep_alive": keep_alive})
        channel = channels(gw.address)
        assert health_status(channel, SERVICE_NAME) == "SERVING"
        assert pb_grpc.EscalationStub(channel).Describe(samples.request(), timeout=5).attempts == 1
        time.sleep(0.3)  # three health polls
        assert fake.load_requests() == [] and not fake.model("llava:7b").is_loaded(time.monotonic())


# -- context -----------------------------------------------------------------------------------------


def test_a_prompt_that_would_overflow_leaves_crops_out_and_says_so(stub: pb_grpc.EscalationStub,
                                                                   fake_ollama: FakeOllama) -> None:
    # 4096 tokens, 512 kept for the answer: the frame, the text and 2 crops fit (768 tokens per image)
    reply = stub.Describe(samples.request(crops=crops(4)), timeout=10)
    assert reply.verdict == pb.VERDICT_DEFECT
    assert list(reply.notes) == ["2 of 4 crop(s) left out to fit the model's context (4096 tokens, 768 per image, "
                                 "512 kept for the answer)"]
    (chat,) = fake_ollama.chat_requests()
    fitted = chat.fitted
    assert chat.body["truncate"] is False
    assert fitted is not None and fitted.images_seen == 3 and not fitted.truncated and fitted.dropped_messages == 0
    assert "The next 2 image(s) are close-ups" in chat.body["messages"][1]["content"]  # the text matches


def test_the_retry_fits_too_and_never_drops_the_images(stub: pb_grpc.EscalationStub,
                                                       fake_ollama: FakeOllama) -> None:
    bad = '{"verdict": "pass", "tags": [{"label": "part", "confidence": 1.7}], "defects": [], "description": "x"}'
    fake_ollama.script(bad)
    reply = stub.Describe(samples.request(crops=crops(2)), timeout=10)
    assert reply.attempts == 2
    first, second = fake_ollama.chat_requests()
    assert first.fitted is not None and second.fitted is not None
    assert second.fitted.dropped_messages == 0 and second.fitted.images_seen >= 1  # the model saw the frame


def test_a_retry_that_would_not_fit_is_not_sent(start_gateway: StartGateway, fake_ollama: FakeOllama,
                                                channels: Channels) -> None:
    # the frame and the question fit 2048 - 256 tokens; shown again with a long bad answer they would not
    long_bad = json.dumps({"verdict": "pass", "tags": [{"label": "x" * 60, "confidence": 1.7}] * 32,
                           "defects": [], "description": "x"})
    fake_ollama.script(long_bad)
    gw = start_gateway(ollama={"num_ctx": 2048, "num_predict": 256})
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.EscalationStub(channels(gw.address)).Describe(samples.request(), timeout=10)
    assert info.value.code() == grpc.StatusCode.ABORTED  # the answer was bad, not the host
    assert "in 1 attempt(s)" in info.value.details() and "does not fit the model's context" in info.value.details()
    assert len(fake_ollama.chat_requests()) == 1


@pytest.mark.parametrize(("configured", "modelfile", "expected"), [
    (None, None, 4096),  # neither: Ollama's default since v0.9
    (None, 8192, 8192),  # the model's Modelfile PARAMETER num_ctx (from /api/show parameters)
    (4096, 8192, 4096),  # ollama.num_ctx wins
])
def test_the_context_comes_from_the_config_or_the_modelfile(start_gateway: StartGateway, channels: Channels,
                                                           configured: int | None, modelfile: int | None,
                                                           expected: int) -> None:
    with FakeOllama() as fake:
        fake.pull("llava:7b", num_ctx=modelfile)
        gw = start_gateway(fake, ollama={"num_ctx": configured})
        reply = pb_grpc.EscalationStub(channels(gw.address)).Describe(samples.request(crops=crops(4)), timeout=10)
        (preload,) = fake.load_requests()
        (chat,) = fake.chat_requests()
        # the preload and the calls ask for the same context (another one would load the model again)
        assert preload.body["options"]["num_ctx"] == chat.body["options"]["num_ctx"] == expected
        assert bool(reply.notes) == (expected == 4096)  # the frame and 4 crops need about 4600 tokens


def test_the_models_trained_context_caps_num_ctx(start_gateway: StartGateway, channels: Channels) -> None:
    with FakeOllama() as fake:
        fake.pull("llava:7b", context_length=2048)  # a num_ctx of 4096 would be cut to 2048 by Ollama
        gw = start_gateway(fake)
        reply = pb_grpc.EscalationStub(channels(gw.address)).Describe(samples.request(crops=crops(2)), timeout=10)
        assert "2 of 2 crop(s) left out" in reply.notes[0] and "(2048 tokens" in reply.notes[0]


def test_a_context_too_small_for_the_frame_is_failed_precondition(start_gateway: StartGateway,
                                                                  fake_ollama: FakeOllama,
                                                                  channels: Channels) -> None:
    gw = start_gateway(ollama={"num_ctx": 1024})
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.EscalationStub(channels(gw.address)).Describe(samples.request(), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "raise ollama.num_ctx" in info.value.details() and "1024 tokens" in info.value.details()
    assert fake_ollama.chat_requests() == []  # refused before Ollama could cut it


# -- permanent failures ----------------------------------------------------------------------------------


def test_a_model_that_does_not_fit_memory_is_failed_precondition_and_not_serving(
        start_gateway: StartGateway, channels: Channels) -> None:
    with FakeOllama() as fake:
        fake.load_failure = out_of_memory(5.6, 3.1)
        gw = start_gateway(fake)
        channel = channels(gw.address)
        assert health_status(channel, SERVICE_NAME) == "NOT_SERVING"
        assert "does not fit this host's memory" in reason(gw) and "5.6 GiB" in reason(gw)
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.EscalationStub(channel).Describe(samples.request(), timeout=5)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # not UNAVAILABLE: no retry helps
        assert "does not fit" in info.value.details() and fake.chat_requests() == []


def test_a_permanent_failure_is_tried_again_and_the_gateway_recovers(
        start_gateway: StartGateway, channels: Channels, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keeper, "RETRY_FAILED_S", 0.3)  # 60 s in production
    with FakeOllama() as fake:
        fake.load_failure = out_of_memory(5.6, 3.1)
        gw = start_gateway(fake)
        channel = channels(gw.address)
        assert health_status(channel, SERVICE_NAME) == "NOT_SERVING"
        fake.load_failure = None  # someone freed the memory
        assert wait_for_health(channel, "SERVING", SERVICE_NAME) == "SERVING"
        assert pb_grpc.EscalationStub(channel).Describe(samples.request(), timeout=5).verdict == pb.VERDICT_DEFECT
        assert fake.model("llava:7b").loads == 1


def test_a_runner_that_keeps_dying_is_failed_precondition_and_not_serving(
        gateway: GatewayThread, stub: pb_grpc.EscalationStub, fake_ollama: FakeOllama, channels: Channels) -> None:
    channel = channels(gateway.address)
    fake_ollama.crash_runner(times=1)
    with pytest.raises(grpc.RpcError) as once:
        stub.Describe(samples.request(), timeout=5)
    assert once.value.code() == grpc.StatusCode.UNAVAILABLE and "loads it again" in once.value.details()
    assert wait_for_health(channel, "SERVING", SERVICE_NAME) == "SERVING"  # loaded again
    fake_ollama.crash_runner(times=1)
    with pytest.raises(grpc.RpcError) as twice:
        stub.Describe(samples.request(), timeout=5)
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "died 2 times" in twice.value.details()
    assert wait_for_health(channel, "NOT_SERVING", SERVICE_NAME) == "NOT_SERVING"
    assert "died 2 times" in reason(gateway)


# -- the agent's side ----------------------------------------------------------------------------------


def test_the_agent_hears_loading_model_while_its_gateway_loads(start_gateway: StartGateway) -> None:
    with FakeOllama(load_s=LOAD_S) as fake:
        gw = start_gateway(fake)

        async def run() -> list[CallResult]:
            client = EscalationClient.connect(EscalationConfig(gateway=gw.address))  # health checking on
            try:
                first = await client.describe(samples.request(), timeout=2.0)
                await asyncio.sleep(LOAD_S)
                return [first, await client.describe(samples.request(crops=crops(4)), timeout=5.0)]
            finally:
                await client.close()

        during, after = asyncio.run(run())
        assert (during.status, during.code, during.healthy) == ("unavailable", "UNAVAILABLE", False)
        assert during.reason is not None and "health service says NOT_SERVING: loading model" in during.reason
        assert after.status == "answered" and after.answer is not None
        assert after.answer.notes == ("2 of 4 crop(s) left out to fit the model's context (4096 tokens, 768 per "
                                      "image, 512 kept for the answer)",)
        assert HEALTH_REASON_KEY == REASON_KEY  # the agent reads the key the gateway writes
