"""The gateway's ``Describe`` handler: check the request, decode its images, wait for a VLM slot, ask, answer.

One call, in order (its admission, before gRPC reads the request, is
:class:`~agent.gateway.admission.CallGate`'s: authentication, room, the
client's quota):

0. gRPC's deserializer (:class:`RequestParser`) counts the request's fields before parsing it, so that
   no request within gRPC's size limit holds the event loop for long (:mod:`agent.gateway.wirecheck`);
   too many detections, crops or fields: INVALID_ARGUMENT;
1. :func:`build_prompt` checks what costs nothing to check: the template
   (``template_id``; empty means ``inspect-v1``), the number of crops and of
   detections (before any is read), each image's size and header
   (:func:`~agent.gateway.images.inspect_image`: bytes, pixels, JPEG scans,
   its end marker), the hints; INVALID_ARGUMENT with the reason;
2. :class:`ImageDecoder` decodes the images to prove them sound, in a pool of
   ``limits.decode_workers`` threads (never on the event loop); a call whose
   deadline passes while it waits for a worker gives its place up;
3. :meth:`Admission.slot` gives the call one of ``limits.parallel`` VLM slots;
4. the VLM is asked with the call's remaining deadline
   (``context.time_remaining()``); its errors become their gRPC status
   (see :mod:`agent.gateway.vlm`). When the call is cancelled or its
   deadline passes, grpc.aio cancels this handler's task, and with it the wait
   or the HTTP request to Ollama.

Unavailable or model-missing answers from Ollama make the health monitor look
again at once, so the health service turns NOT_SERVING without waiting for its
next poll.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from agent.errors import RequestRejected, VlmError, VlmModelMissing, VlmUnavailable
from agent.gateway.admission import Admission, ClientBusy, QueueFull, Ticket
from agent.gateway.auth import ANONYMOUS, certificate_name
from agent.gateway.config import GatewayConfig
from agent.gateway.images import ImageInfo, decode_image, inspect_image
from agent.gateway.question import load_inspection
from agent.gateway.stats import CallStats
from agent.gateway.templates import Hint, Inspection, Prompt, get_template
from agent.gateway.vlm import Vlm, VlmResult
from agent.gateway.wirecheck import count_fields, field_budget
from agent.redact import redact
from agent.wire import escalation_pb2 as pb
from agent.wire import escalation_pb2_grpc as pb_grpc

__all__ = ["Admission", "EscalationService", "ImageDecoder", "QueueFull", "RequestParser", "UnparsedRequest",
           "build_prompt", "check_request", "request_images", "to_response"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_VERDICTS = {"pass": pb.VERDICT_PASS, "defect": pb.VERDICT_DEFECT, "uncertain": pb.VERDICT_UNCERTAIN}
_SEVERITIES = {"low": pb.SEVERITY_LOW, "medium": pb.SEVERITY_MEDIUM, "high": pb.SEVERITY_HIGH}

CheckedImage = tuple[bytes, ImageInfo, str]


@dataclasses.dataclass(frozen=True)
class UnparsedRequest:
    """A request refused before it was parsed (:mod:`agent.gateway.wirecheck`): why."""

    reason: str  # data, its header facts, its name in messages ("crops[1].image")


def request_images(request: pb.DescribeRequest, config: GatewayConfig) -> list[CheckedImage]:
    """The request's images with their headers checked (no decoding); RequestRejected naming the bad one.
    The number of crops is checked before any crop is looked at."""
    limits = config.limits
    if len(request.crops) > limits.max_crops:
        raise RequestRejected(f"the request has {len(request.crops)} crops; the gateway takes at most "
                              f"{limits.max_crops} (limits.max_crops)")
    named = [(request.image, "image")] + [(c.image, f"crops[{i}].image") for i, c in enumerate(request.crops)]
    return [(data, inspect_image(data, what=what, max_bytes=limits.max_image_bytes,
                                 max_pixels=limits.max_image_pixels, max_scans=limits.max_jpeg_scans), what)
            for data, what in named]


def build_prompt(request: pb.DescribeRequest, config: GatewayConfig, inspection: Inspection | None = None) -> Prompt:
    """:func:`check_request`'s prompt."""
    return check_request(request, config, inspection)[0]


def check_request(request: pb.DescribeRequest, config: GatewayConfig,
                  inspection: Inspection | None = None) -> tuple[Prompt, list[CheckedImage]]:
    """Check a request (counts first, then headers and hints; no image is decoded); its prompt (about
    ``inspection``'s line, default the conveyor and ``config.defect_classes``) and its images to decode.
    RequestRejected if bad."""
    limits = config.limits
    template = get_template(request.template_id)
    if len(request.detections) > limits.max_detections:
        raise RequestRejected(f"the request has {len(request.detections)} detections; expected at most "
                              f"{limits.max_detections} (limits.max_detections; send the uncertain ones)")
    images = request_images(request, config)
    crops = [(crop.image, _hint(crop.label, crop.confidence, crop.box if crop.HasField("box") else None,
                                f"crops[{i}]")) for i, crop in enumerate(request.crops)]
    detections = [_hint(d.label, d.confidence, d.box if d.HasField("box") else None, f"detections[{i}]")
                  for i, d in enumerate(request.detections)]
    size = (request.source_width, request.source_height) if request.source_width and request.source_height else None
    prompt = template.build(image=request.image, crops=crops, detections=detections, source_size=size,
                            defect_classes=config.defect_classes, inspection=inspection)
    return prompt, images


class ImageDecoder:
    """Decodes images in a pool of ``workers`` threads (the decoders release the GIL, so the event loop
    runs on). A decode waiting for a worker is dropped when its call is cancelled; a started one runs to
    its end, which the header limits (pixels, JPEG scans) keep short."""

    def __init__(self, workers: int) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateway-decode")

    async def run(self, func: Callable[..., _T], *args: object) -> _T:
        """``func(*args)`` in the pool: work that reads every byte of a request (the JPEG scan count) leaves
        the loop free, and waits its turn behind the decodes like them."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    async def decode(self, images: list[CheckedImage]) -> None:
        loop = asyncio.get_running_loop()
        for data, info, what in images:
            await loop.run_in_executor(self._pool, decode_image, data, info, what)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class RequestParser:
    """gRPC's request deserializer for ``Describe``: the fields are counted against the limits before the
    request is parsed (on the event loop, holding the GIL), so that the parse is as short as the limits allow."""

    def __init__(self, max_detections: int, max_crops: int) -> None:
        self._most = {"detections": max_detections, "crops": max_crops}
        self._budget = field_budget(pb.DescribeRequest.DESCRIPTOR, self._most)

    def __call__(self, data: bytes) -> pb.DescribeRequest | UnparsedRequest:
        problem = count_fields(data, pb.DescribeRequest.DESCRIPTOR, self._most, self._budget)
        return UnparsedRequest(problem) if problem is not None else pb.DescribeRequest.FromString(data)


def _hint(label: str, confidence: float, box: pb.Box | None, what: str) -> Hint:
    if not math.isfinite(confidence) or not 0.0 <= confidence <= 1.0:
        raise RequestRejected(f"{what}.confidence is {confidence}; expected a number from 0 to 1")
    if len(label) > 64:
        raise RequestRejected(f"{what}.label is {len(label)} characters long; expected at most 64")
    coords = None
    if box is not None:
        coords = (box.x1, box.y1, box.x2, box.y2)
        if not all(math.isfinite(v) for v in coords) or box.x2 < box.x1 or box.y2 < box.y1:
            raise RequestRejected(f"{what}.box is ({box.x1}, {box.y1}, {box.x2}, {box.y2}); expected finite "
                                  "pixels with x1 <= x2 and y1 <= y2")
    return Hint(label=label, confidence=confidence, box=coords)


def to_response(result: VlmResult, gateway_ms: float) -> pb.DescribeResponse:
    answer = result.answer
    return pb.DescribeResponse(
        verdict=_VERDICTS[answer.verdict],
        tags=[pb.Tag(label=t.label, confidence=t.confidence) for t in answer.tags],
        defects=[pb.Defect(type=d.type, location=d.location, severity=_SEVERITIES[d.severity])
                 for d in answer.defects],
        description=answer.description, model=result.model, vlm_ms=result.vlm_ms, gateway_ms=gateway_ms,
        attempts=result.attempts, prompt_tokens=result.prompt_tokens, answer_tokens=result.answer_tokens,
        notes=list(result.notes))


class EscalationService(pb_grpc.EscalationServicer):
    """The ``edge_agent.v1.Escalation`` servicer. ``on_vlm_trouble`` is called (with the reason) when
    Ollama looks unreachable or the model missing, so that the health status follows at once.
    Calls come through :class:`~agent.gateway.admission.CallGate` to :meth:`describe`, with a ticket;
    ``Describe`` itself (no gate in front, as in a test that adds the servicer alone) takes its own."""

    def __init__(self, vlm: Vlm, config: GatewayConfig, stats: CallStats,
                 on_vlm_trouble: Callable[[str], None] = lambda reason: None,
                 inspection: Inspection | None = None) -> None:
        self._vlm = vlm
        self._config = config
        self._inspection = inspection if inspection is not None else load_inspection(config)  # once, at start
        self._stats = stats
        self._on_vlm_trouble = on_vlm_trouble
        limits = config.limits
        self.admission = Admission(limits.parallel, limits.queue, limits.per_client)
        self.decoder = ImageDecoder(limits.decode_workers)
        self._name_from_certificate = config.auth.tokens_file is None and config.authenticated
        self.parse_request = RequestParser(limits.max_detections, limits.max_crops)

    async def Describe(self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext) -> pb.DescribeResponse:
        try:
            ticket = self.admission.admit()
        except QueueFull as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            raise RuntimeError("grpc.aio's context.abort returned instead of raising") from exc
        try:
            return await self.describe(request, context, ticket)
        finally:
            ticket.release()

    async def describe(self, request: pb.DescribeRequest | UnparsedRequest, context: grpc.aio.ServicerContext,
                       ticket: Ticket) -> pb.DescribeResponse:
        start = time.perf_counter()
        code: grpc.StatusCode = grpc.StatusCode.OK
        message = ""
        result: VlmResult | None = None
        unparsed, request = (request, pb.DescribeRequest()) if isinstance(request, UnparsedRequest) else (None, request)
        try:
            if unparsed is not None:
                raise RequestRejected(unparsed.reason)
            if self._name_from_certificate:
                ticket.rename(certificate_name(context.auth_context()) or ANONYMOUS)
            # counts, headers and hints: no decode, but the JPEG scan count reads every byte (about 1.7 ms per
            # 2 MiB), so off the loop, in the decode pool: a burst of admitted calls cannot queue up loop time
            prompt, images = await self.decoder.run(check_request, request, self._config, self._inspection)
            await self.decoder.decode(images)
            async with self.admission.slot():
                result = await self._vlm.ask(prompt, timeout=context.time_remaining())
        except RequestRejected as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except (QueueFull, ClientBusy) as exc:
            code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
        except VlmError as exc:
            code, message = grpc.StatusCode[exc.grpc_code], str(exc)
            if isinstance(exc, (VlmUnavailable, VlmModelMissing)):
                self._on_vlm_trouble(message)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client went away or its deadline passed
            raise
        except Exception:  # a bug: logged with its traceback, answered INTERNAL instead of gRPC's bare UNKNOWN
            code, message = grpc.StatusCode.INTERNAL, "the gateway failed on this request (a bug; see its log)"
            log.exception("describe failed", extra={"event_id": request.event_id, "client": ticket.client})
        finally:
            gateway_ms = (time.perf_counter() - start) * 1000.0
            self._stats.record(code.name, gateway_ms, result.vlm_ms if result else None, client=ticket.client)
            log.debug("describe", extra={
                "client": ticket.client, "device": request.device_id, "camera": request.camera_id,
                "event_id": request.event_id, "frame": request.frame_sequence, "code": code.name,
                "gateway_ms": round(gateway_ms, 2), "vlm_ms": round(result.vlm_ms, 2) if result else None,
                "attempts": result.attempts if result else 0, "image_bytes": len(request.image),
                "crops": len(request.crops), "prefilter_model": request.prefilter_model, "error": message or None})
        if result is not None:
            return to_response(result, gateway_ms)
        await context.abort(code, redact(message))
        raise RuntimeError("grpc.aio's context.abort returned instead of raising")  # it always raises
