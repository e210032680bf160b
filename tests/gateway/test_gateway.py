"""The gateway as an agent sees it: a real grpc.aio server on loopback in front of the fake Ollama."""

from __future__ import annotations

import base64
import concurrent.futures
import logging
import pathlib
import threading
import time
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from agent.errors import GatewayError
from agent.gateway.config import GatewayConfig
from agent.gateway.server import SERVICE_NAME, serve
from agent.gateway.templates import answer_schema
from agent.wire import escalation_pb2 as pb
from agent.wire import escalation_pb2_grpc as pb_grpc
from tests.escalation import samples
from tests.fakes.gateway import GatewayThread, gateway_config
from tests.fakes.gateway_fixtures import StartGateway, health_status, wait_for_health
from tests.fakes.ollama import VALID_ANSWER, FakeOllama, Reply

Channels = Callable[..., grpc.Channel]


def describe_error(stub: pb_grpc.EscalationStub, request: pb.DescribeRequest,
                   timeout: float = 10.0) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.Describe(request, timeout=timeout)
    return info.value


# -- answers ------------------------------------------------------------------------------------


def test_a_good_request_is_answered_with_the_vlms_structured_tags(stub: pb_grpc.EscalationStub,
                                                                 fake_ollama: FakeOllama) -> None:
    reply = stub.Describe(samples.request(), timeout=10)

    assert reply.verdict == pb.VERDICT_DEFECT
    assert [(t.label, round(t.confidence, 2)) for t in reply.tags] == [("scratch", 0.83), ("metal part", 0.97)]
    assert [(d.type, d.location, d.severity) for d in reply.defects] == [
        ("scratch", "upper left of the part", pb.SEVERITY_MEDIUM)]
    assert reply.description == VALID_ANSWER["description"]
    assert (reply.model, reply.attempts, reply.answer_tokens) == ("llava:7b", 1, 48)
    assert reply.prompt_tokens > 768 and not reply.notes  # the image and the text; nothing left out
    assert 0 < reply.vlm_ms <= reply.gateway_ms

    # what Ollama was asked
    (chat,) = fake_ollama.chat_requests()
    body = chat.body
    assert body["model"] == "llava:7b" and body["stream"] is False and body["keep_alive"] == "30m"
    assert body["options"] == {"temperature": 0.1, "num_ctx": 4096, "num_predict": 512}
    assert body["format"] == answer_schema(("scratch", "hole", "stain", "missing", "other"))
    system, user = body["messages"]
    assert system["role"] == "system" and "JSON" in system["content"]
    assert user["images"] == [base64.b64encode(samples.jpeg()).decode()]
    assert "scratch, hole, stain, missing" in user["content"]  # the defect classes the prefilter knows
    assert "scratch (confidence 0.42) at 100,80,180,120" in user["content"]  # its detection as a hint
    assert "672x448 frame" in user["content"]


def test_crops_follow_the_frame_as_further_images(stub: pb_grpc.EscalationStub, fake_ollama: FakeOllama) -> None:
    crops = [pb.Crop(image=samples.jpeg(64, 48), box=pb.Box(x1=1, y1=2, x2=65, y2=50), label="hole", confidence=0.3),
             pb.Crop(image=samples.png(), label="stain", confidence=0.5)]
    stub.Describe(samples.request(crops=crops), timeout=10)
    user = fake_ollama.chat_requests()[0].body["messages"][1]
    assert [base64.b64decode(i) for i in user["images"]] == [samples.jpeg(), samples.jpeg(64, 48), samples.png()]
    assert "close-up 1: hole (confidence 0.30) at 1,2,65,50" in user["content"]
    assert "close-up 2: stain (confidence 0.50)" in user["content"]


OUT_OF_RANGE = '{"verdict": "pass", "tags": [{"label": "part", "confidence": 1.7}], "defects": [], "description": "x"}'


def test_an_empty_template_id_means_inspect_v1(stub: pb_grpc.EscalationStub) -> None:
    assert stub.Describe(samples.request(template_id=""), timeout=10).verdict == pb.VERDICT_DEFECT


def test_an_invalid_answer_is_asked_again_once_then_aborted(stub: pb_grpc.EscalationStub,
                                                             fake_ollama: FakeOllama) -> None:
    fake_ollama.script(OUT_OF_RANGE, OUT_OF_RANGE)
    error = describe_error(stub, samples.request())
    assert error.code() == grpc.StatusCode.ABORTED
    assert "no valid answer in 2 attempt(s)" in error.details() and "1.7 is greater than" in error.details()
    first, second = fake_ollama.chat_requests()
    # the retry shows the model its answer and what was wrong with it
    assert second.body["messages"][2] == {"role": "assistant", "content": OUT_OF_RANGE}
    assert "not valid" in second.body["messages"][3]["content"]
    assert second.body["messages"][1]["images"] == first.body["messages"][1]["images"]
    assert stub.Describe(samples.request(), timeout=10).attempts == 1  # the next call is served


@pytest.mark.parametrize("first", [
    # cut off by num_predict: not JSON (the grammar cannot stop that)
    Reply(content='{"verdict": "pass", "tags": [{"label": "pa', done_reason="length"),
    # a number bound: llama-server's grammar skips number minimum/maximum
    Reply(content='{"verdict": "pass", "tags": [{"label": "part", "confidence": 1.7}], "defects": [], '
          '"description": "x"}'),
])
def test_an_invalid_then_good_answer_is_answered_on_the_second_attempt(
        stub: pb_grpc.EscalationStub, fake_ollama: FakeOllama, first: Reply) -> None:
    fake_ollama.script(first, Reply(metrics={"total_duration": 2_500_000_000}))
    reply = stub.Describe(samples.request(), timeout=10)
    assert reply.attempts == 2 and reply.verdict == pb.VERDICT_DEFECT
    assert reply.vlm_ms >= 2500.0  # Ollama's nanoseconds, in milliseconds, summed over the attempts


# -- bad input ------------------------------------------------------------------------------------


def _crop(image: bytes) -> list[pb.Crop]:
    return [pb.Crop(image=image, label="hole", confidence=0.4)]


BAD_REQUESTS = [
    # (id, request fields, words the message must contain)
    ("truncated JPEG", {"image": samples.jpeg()[: len(samples.jpeg()) // 2]}, ["truncated JPEG", "EOI"]),
    ("JPEG cut in its header", {"image": samples.jpeg()[:200]}, ["truncated JPEG", "header"]),
    ("PNG bomb", {"image": samples.png_bomb()}, ["20000x20000", "400,000,000 pixels", "max_image_pixels"]),
    ("4 MB payload", {"image": b"\xff\xd8\xff\xe0" + bytes(4 * 1024 * 1024)},
     ["4,194,308 bytes", "at most 2,097,152", "max_image_bytes"]),
    ("empty image", {"image": b""}, ["image is empty", "JPEG or PNG"]),
    ("not an image", {"image": b"GIF89a" + bytes(100)}, ["not JPEG or PNG", "GIF"]),
    ("text", {"image": b"hello, gateway"}, ["not JPEG or PNG", "expected a JPEG"]),
    ("truncated PNG", {"image": samples.png()[:-20]}, ["truncated PNG", "IEND"]),
    ("unknown template id", {"template_id": "inspect-v9"}, ["inspect-v9", "unknown", "inspect-v1"]),
    ("truncated crop", {"crops": _crop(samples.jpeg(64, 48)[:300])}, ["crops[0].image", "truncated JPEG"]),
    ("too many crops", {"crops": _crop(samples.png()) * 5}, ["more than 4 crops", "max_crops"]),
    ("confidence outside 0..1", {"detections": [pb.Detection(label="hole", confidence=1.5)]},
     ["detections[0].confidence", "from 0 to 1"]),
]


@pytest.mark.parametrize(("fields", "words"), [row[1:] for row in BAD_REQUESTS], ids=[row[0] for row in BAD_REQUESTS])
def test_bad_input_is_invalid_argument_with_a_message_and_the_next_request_is_served(
        stub: pb_grpc.EscalationStub, fake_ollama: FakeOllama, fields: dict[str, object], words: list[str]) -> None:
    error = describe_error(stub, samples.request(**fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in error.details()
    assert fake_ollama.chat_requests() == []  # refused before Ollama is asked
    assert stub.Describe(samples.request(), timeout=10).verdict == pb.VERDICT_DEFECT


def test_a_request_above_the_receive_limit_is_refused_by_grpc_and_the_gateway_carries_on(
        start_gateway: StartGateway, channels: Channels) -> None:
    # documented: above limits.max_message_bytes gRPC refuses the message itself
    gw = start_gateway(limits={"max_image_bytes": 1024 * 1024, "max_message_bytes": 2 * 1024 * 1024})
    stub = pb_grpc.EscalationStub(channels(gw.address))
    error = describe_error(stub, samples.request(image=b"\xff\xd8\xff" + bytes(3 * 1024 * 1024)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Received message larger than max" in error.details()
    assert stub.Describe(samples.request(), timeout=10).attempts == 1


# -- Ollama's state -------------------------------------------------------------------------------


def test_ollama_down_is_unavailable_and_not_serving_then_serving_when_it_is_back(
        gateway: GatewayThread, stub: pb_grpc.EscalationStub, fake_ollama: FakeOllama, channels: Channels) -> None:
    channel = channels(gateway.address)
    assert health_status(channel) == "SERVING" and health_status(channel, SERVICE_NAME) == "SERVING"

    fake_ollama.down()
    error = describe_error(stub, samples.request())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "unreachable" in error.details() and fake_ollama.url in error.details()
    assert wait_for_health(channel, "NOT_SERVING") == "NOT_SERVING"
    assert health_status(channel, SERVICE_NAME) == "NOT_SERVING"
    assert "unreachable" in gateway.server.health.reason  # type: ignore[union-attr]

    fake_ollama.up()
    assert wait_for_health(channel, "SERVING") == "SERVING"
    assert health_status(channel, SERVICE_NAME) == "SERVING"
    assert stub.Describe(samples.request(), timeout=10).verdict == pb.VERDICT_DEFECT


def test_model_not_pulled_is_failed_precondition_and_not_serving(
        gateway: GatewayThread, stub: pb_grpc.EscalationStub, fake_ollama: FakeOllama, channels: Channels) -> None:
    channel = channels(gateway.address)
    fake_ollama.remove("llava:7b")
    error = describe_error(stub, samples.request())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ollama pull llava:7b" in error.details()
    assert wait_for_health(channel, "NOT_SERVING", SERVICE_NAME) == "NOT_SERVING"
    assert "not pulled" in gateway.server.health.reason  # type: ignore[union-attr]

    fake_ollama.pull("llava:7b")
    assert wait_for_health(channel, "SERVING", SERVICE_NAME) == "SERVING"


def test_a_model_without_vision_is_not_serving(start_gateway: StartGateway, channels: Channels) -> None:
    with FakeOllama(models={"llava:7b": ["completion"]}) as text_only:
        gw = start_gateway(text_only)
        assert health_status(channels(gw.address)) == "NOT_SERVING"
        assert "cannot take images" in gw.server.health.reason  # type: ignore[union-attr]


def test_ollama_busy_503_is_unavailable_and_health_stays_serving(start_gateway: StartGateway,
                                                                  channels: Channels) -> None:
    with FakeOllama(delay_s=0.5, parallel=1, max_queue=0) as busy:
        gw = start_gateway(busy, limits={"parallel": 2})
        stub = pb_grpc.EscalationStub(channels(gw.address))
        first = stub.Describe.future(samples.request(), timeout=10)
        _wait(lambda: len(busy.chat_requests()) == 1)
        error = describe_error(stub, samples.request())
        assert error.code() == grpc.StatusCode.UNAVAILABLE and "Ollama is busy" in error.details()
        assert first.result().attempts == 1
        assert health_status(channels(gw.address)) == "SERVING"


# -- limits ---------------------------------------------------------------------------------------


def test_a_full_queue_is_resource_exhausted_with_a_message(start_gateway: StartGateway, fake_ollama: FakeOllama,
                                                           channels: Channels) -> None:
    fake_ollama.delay_s = 0.6
    gw = start_gateway(limits={"parallel": 1, "queue": 1})
    admission = gw.server.service.admission  # type: ignore[union-attr]
    stub = pb_grpc.EscalationStub(channels(gw.address))
    running = stub.Describe.future(samples.request(), timeout=10)
    _wait(lambda: admission.running == 1)
    waiting = stub.Describe.future(samples.request(), timeout=10)
    _wait(lambda: admission.waiting == 1)

    error = describe_error(stub, samples.request())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "busy" in error.details() and "limits.queue=1" in error.details()
    assert running.result().attempts == 1 and waiting.result().attempts == 1
    assert len(fake_ollama.chat_requests()) == 2  # never more than `parallel` at Ollama


def test_a_deadline_shorter_than_ollama_is_deadline_exceeded_and_cancels_the_ollama_call(
        stub: pb_grpc.EscalationStub, fake_ollama: FakeOllama) -> None:
    fake_ollama.delay_s = 3.0
    start = time.monotonic()
    error = describe_error(stub, samples.request(), timeout=0.4)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 2.0
    assert fake_ollama.wait_for_disconnect(2.0)  # the gateway closed its request to Ollama
    (chat,) = fake_ollama.chat_requests()
    assert chat.disconnected and chat.status == 0

    fake_ollama.delay_s = 0.0
    assert stub.Describe(samples.request(), timeout=10).attempts == 1


def test_a_cancelled_call_cancels_the_ollama_call(stub: pb_grpc.EscalationStub, fake_ollama: FakeOllama) -> None:
    fake_ollama.delay_s = 3.0
    call = stub.Describe.future(samples.request(), timeout=10)
    _wait(lambda: len(fake_ollama.chat_requests()) == 1)
    call.cancel()
    assert fake_ollama.wait_for_disconnect(2.0)
    assert call.cancelled()


def test_the_gateways_own_timeout_is_deadline_exceeded(start_gateway: StartGateway, fake_ollama: FakeOllama,
                                                       channels: Channels) -> None:
    fake_ollama.delay_s = 2.0
    gw = start_gateway(ollama={"timeout_s": 0.3})
    error = describe_error(pb_grpc.EscalationStub(channels(gw.address)), samples.request(), timeout=10)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "ollama.timeout_s=0.3" in error.details()
    assert fake_ollama.wait_for_disconnect(2.0)


# -- the service around it --------------------------------------------------------------------------


def test_reflection_is_off_by_default(gateway: GatewayThread, channels: Channels) -> None:
    database = ProtoReflectionDescriptorDatabase(channels(gateway.address))
    with pytest.raises(grpc.RpcError) as caught:
        database.get_services()
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_reflection_when_turned_on_lists_the_service(start_gateway: StartGateway, channels: Channels) -> None:
    database = ProtoReflectionDescriptorDatabase(channels(start_gateway(reflection=True).address))
    services = set(database.get_services())
    assert {"edge_agent.v1.Escalation", "grpc.health.v1.Health"} <= services
    method = database.FindFileContainingSymbol("edge_agent.v1.Escalation")
    assert method.name == "edge_agent/v1/escalation.proto"


def test_health_knows_the_overall_and_the_service_name_only(gateway: GatewayThread, channels: Channels) -> None:
    channel = channels(gateway.address)
    assert health_status(channel, "") == "SERVING"
    assert health_status(channel, "edge_agent.v1.Escalation") == "SERVING"
    with pytest.raises(grpc.RpcError) as info:
        health_status(channel, "some.other.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_stopping_turns_health_not_serving_before_the_server_goes(fake_ollama: FakeOllama,
                                                                  channels: Channels) -> None:
    gw = GatewayThread(gateway_config(fake_ollama.url)).start()
    try:
        watch = health_pb2_grpc.HealthStub(channels(gw.address)).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stopper = threading.Thread(target=gw.stop, kwargs={"grace": 1.0})
        stopper.start()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        stopper.join(10)
    finally:
        gw.stop(grace=0)


def test_a_unix_socket(start_gateway: StartGateway, channels: Channels, tmp_path: pathlib.Path) -> None:
    gw = start_gateway(listen=f"unix:{tmp_path}/gateway.sock")
    assert gw.address == f"unix:{tmp_path}/gateway.sock" and gw.port is None
    stub = pb_grpc.EscalationStub(channels(gw.address))
    assert stub.Describe(samples.request(), timeout=10).verdict == pb.VERDICT_DEFECT


def test_an_address_in_use_is_a_clear_error(gateway: GatewayThread, fake_ollama: FakeOllama) -> None:
    second = GatewayThread(gateway_config(fake_ollama.url, listen=gateway.address))
    with pytest.raises(GatewayError, match=f"cannot listen on '{gateway.address}'.*in use"):
        second.start()


def test_serve_is_an_async_api(fake_ollama: FakeOllama) -> None:
    # what the end-to-end tests use directly: serve(config) -> GatewayServer with .address and .stop()
    import asyncio

    async def scenario() -> tuple[str, int]:
        server = await serve(GatewayConfig.model_validate(
            {"listen": "127.0.0.1:0", "ollama": {"host": fake_ollama.url}, "summary_interval_s": 0}))
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                reply = await pb_grpc.EscalationStub(channel).Describe(samples.request(), timeout=10)
            return server.address, reply.attempts
        finally:
            await server.stop(0)

    address, attempts = asyncio.run(scenario())
    assert address.startswith("127.0.0.1:") and attempts == 1


def test_concurrent_agents_are_all_served(start_gateway: StartGateway, channels: Channels) -> None:
    gw = start_gateway(limits={"parallel": 2, "queue": 16})
    stubs = [pb_grpc.EscalationStub(channels(gw.address)) for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda s: [s.Describe(samples.request(), timeout=10) for _ in range(3)], stubs))
    assert sum(len(r) for r in replies) == 12
    assert gw.server.stats.total_calls == 12  # type: ignore[union-attr]


def test_one_debug_line_per_call_and_a_periodic_summary(start_gateway: StartGateway, channels: Channels,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    gw = start_gateway(summary_interval_s=0.2)
    stub = pb_grpc.EscalationStub(channels(gw.address))
    stub.Describe(samples.request(event_id="ev-77"), timeout=10)
    describe_error(stub, samples.request(image=b""))
    _wait(lambda: any(r.getMessage() == "gateway summary" for r in caplog.records))
    calls = [r for r in caplog.records if r.getMessage() == "describe"]
    assert [(r.levelname, r.code, r.event_id) for r in calls] == [  # type: ignore[attr-defined]
        ("DEBUG", "OK", "ev-77"), ("DEBUG", "INVALID_ARGUMENT", "ev-0001")]
    summary = next(r for r in caplog.records if r.getMessage() == "gateway summary")
    assert summary.levelname == "INFO" and summary.calls == 2  # type: ignore[attr-defined]
    assert summary.by_code == "INVALID_ARGUMENT=1,OK=1"  # type: ignore[attr-defined]


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
