"""The gateway's ``Describe`` handler: check the request, wait for a VLM slot, ask, answer.

One call, in order:

1. the template (``template_id``; empty means ``inspect-v1``) and the images
   (frame and crops, :mod:`agent.escalation.images`; large ones in a worker
   thread, since decoding them takes a while) are checked: INVALID_ARGUMENT
   with the reason;
2. :class:`Admission` gives the call one of ``limits.parallel`` VLM slots,
   waiting in a queue of at most ``limits.queue`` calls; a call that finds the
   queue full is refused at once with RESOURCE_EXHAUSTED;
3. the VLM is asked with the call's remaining deadline
   (``context.time_remaining()``); its errors become their gRPC status
   (see :mod:`agent.escalation.vlm`). When the call is cancelled or its
   deadline passes, grpc.aio cancels this handler's task, and with it the wait
   in the queue or the HTTP request to Ollama.

Unavailable or model-missing answers from Ollama make the health monitor look
again at once, so the health service turns NOT_SERVING without waiting for its
next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable

import grpc

from agent.config.gateway import GatewayConfig
from agent.errors import GatewayError, RequestRejected, VlmError, VlmModelMissing, VlmUnavailable
from agent.escalation.images import check_image
from agent.escalation.stats import CallStats
from agent.escalation.templates import Hint, Prompt, get_template
from agent.escalation.vlm import Vlm, VlmResult
from agent.escalation.wire import escalation_pb2 as pb
from agent.escalation.wire import escalation_pb2_grpc as pb_grpc
from agent.redact import redact

__all__ = ["Admission", "EscalationService", "QueueFull", "build_prompt", "to_response"]

log = logging.getLogger(__name__)

# images up to this many bytes in all are checked on the event loop (a 672x448 JPEG of ~60 kB takes
# about 1 ms to check); larger ones in a worker thread, so that a big PNG never stalls other calls
_INLINE_CHECK_BYTES = 256 * 1024
_VERDICTS = {"pass": pb.VERDICT_PASS, "defect": pb.VERDICT_DEFECT, "uncertain": pb.VERDICT_UNCERTAIN}
_SEVERITIES = {"low": pb.SEVERITY_LOW, "medium": pb.SEVERITY_MEDIUM, "high": pb.SEVERITY_HIGH}


class QueueFull(GatewayError):
    """Every VLM slot is busy and the wait queue is full."""


class Admission:
    """``parallel`` slots for VLM calls and a wait queue of at most ``queue`` calls (FIFO)."""

    def __init__(self, parallel: int, queue: int) -> None:
        self.parallel = parallel
        self.queue = queue
        self._slots = asyncio.Semaphore(parallel)
        self.waiting = 0
        self.running = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body; raise QueueFull at once when no slot is free and the queue is full."""
        if self._slots.locked() and self.waiting >= self.queue:
            raise QueueFull(f"the gateway is busy: {self.running} VLM call(s) running (limits.parallel="
                            f"{self.parallel}) and {self.waiting} waiting (limits.queue={self.queue}); retry later "
                            "with backoff, or add gateways")
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()


def build_prompt(request: pb.DescribeRequest, config: GatewayConfig) -> Prompt:
    """Check a request and build its prompt (pure, CPU-bound: decodes every image). RequestRejected if bad."""
    limits = config.limits
    template = get_template(request.template_id)
    check_image(request.image, what="image", max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels)
    if len(request.crops) > limits.max_crops:
        raise RequestRejected(f"the request has {len(request.crops)} crops; the gateway takes at most "
                              f"{limits.max_crops} (limits.max_crops)")
    crops: list[tuple[bytes, Hint]] = []
    for i, crop in enumerate(request.crops):
        check_image(crop.image, what=f"crops[{i}].image", max_bytes=limits.max_image_bytes,
                    max_pixels=limits.max_image_pixels)
        crops.append((crop.image, _hint(crop.label, crop.confidence, crop.box if crop.HasField("box") else None,
                                        f"crops[{i}]")))
    detections = [_hint(d.label, d.confidence, d.box if d.HasField("box") else None, f"detections[{i}]")
                  for i, d in enumerate(request.detections)]
    if len(detections) > 100:
        raise RequestRejected(f"the request has {len(detections)} detections; expected at most 100 (send the "
                              "uncertain ones)")
    size = (request.source_width, request.source_height) if request.source_width and request.source_height else None
    return template.build(image=request.image, crops=crops, detections=detections, source_size=size,
                          defect_classes=config.defect_classes)


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
        attempts=result.attempts, prompt_tokens=result.prompt_tokens, answer_tokens=result.answer_tokens)


class EscalationService(pb_grpc.EscalationServicer):
    """The ``edge_agent.v1.Escalation`` servicer. ``on_vlm_trouble`` is called (with the reason) when
    Ollama looks unreachable or the model missing, so that the health status follows at once."""

    def __init__(self, vlm: Vlm, config: GatewayConfig, stats: CallStats,
                 on_vlm_trouble: Callable[[str], None] = lambda reason: None) -> None:
        self._vlm = vlm
        self._config = config
        self._stats = stats
        self._on_vlm_trouble = on_vlm_trouble
        self.admission = Admission(config.limits.parallel, config.limits.queue)

    async def Describe(self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext) -> pb.DescribeResponse:
        start = time.perf_counter()
        code: grpc.StatusCode = grpc.StatusCode.OK
        message = ""
        result: VlmResult | None = None
        try:
            if len(request.image) + sum(len(c.image) for c in request.crops) <= _INLINE_CHECK_BYTES:
                prompt = build_prompt(request, self._config)  # ~1 ms: cheaper than a hop to a thread
            else:
                prompt = await asyncio.to_thread(build_prompt, request, self._config)
            async with self.admission.slot():
                result = await self._vlm.ask(prompt, timeout=context.time_remaining())
        except RequestRejected as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except QueueFull as exc:
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
            log.exception("describe failed", extra={"event_id": request.event_id})
        finally:
            gateway_ms = (time.perf_counter() - start) * 1000.0
            self._stats.record(code.name, gateway_ms, result.vlm_ms if result else None)
            log.debug("describe", extra={
                "device": request.device_id, "camera": request.camera_id, "event_id": request.event_id,
                "frame": request.frame_sequence, "code": code.name, "gateway_ms": round(gateway_ms, 2),
                "vlm_ms": round(result.vlm_ms, 2) if result else None, "attempts": result.attempts if result else 0,
                "image_bytes": len(request.image), "crops": len(request.crops),
                "prefilter_model": request.prefilter_model, "error": message or None})
        if result is not None:
            return to_response(result, gateway_ms)
        await context.abort(code, redact(message))
        raise RuntimeError("grpc.aio's context.abort returned instead of raising")  # it always raises
