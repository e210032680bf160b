"""Escalation of batch items to the gateway (I/O): one Describe call per uncertain item.

The daemon's pieces, called from the batch loop instead of from its escalation thread: the request
(:func:`agent.escalation.request.build_request`, encoded on the caller's thread), the gRPC client
(:class:`EscalationClient`, on a private event loop that this object runs in a background thread), the
status mapping of the call's result, and the merge rule (:func:`agent.escalation.merge.merge`).
:meth:`GatewayEscalation.submit` starts a call and returns a future, so several calls can be in flight at
once (the batch loop keeps at most ``escalation.max_in_flight``); :meth:`GatewayEscalation.ask` and
calling the object wait for one. There is no rate limit, no near-duplicate cache and no circuit breaker
here: each uncertain item gets its own call, with the config's ``escalation.call_deadline_s`` counted from
the call's start, and its escalation status says how the call ended.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import cv2
import grpc
import numpy as np

from agent.config.escalation import EscalationConfig
from agent.core.decision import TriageDecision
from agent.core.event import EscalationOutcome, TagEvent
from agent.escalation.client import EscalationClient, channel_credentials, read_token
from agent.escalation.merge import VlmAnswer, merge
from agent.escalation.request import build_request
from agent.wire import escalation_pb2 as pb


class GatewayEscalation:
    """``escalate(image, decision, event) -> event`` through the gateway; :meth:`close` when done."""

    def __init__(self, config: EscalationConfig, credentials: grpc.ChannelCredentials | None = None) -> None:
        if config.gateway is None:
            raise ValueError("escalation.gateway is not set")
        if credentials is None and config.tls is not None:
            credentials = channel_credentials(config.tls)  # ConfigError naming the file, before anything runs
        self._token = read_token(config)  # likewise
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="batch-escalation", daemon=True)
        self._thread.start()
        self._client = asyncio.run_coroutine_threadsafe(self._connect(credentials), self._loop).result()

    async def _connect(self, credentials: grpc.ChannelCredentials | None) -> EscalationClient:
        return EscalationClient.connect(self.config, credentials, self._token)  # on the loop that will use it

    def __call__(self, image: np.ndarray, decision: TriageDecision, event: TagEvent) -> TagEvent:
        return self.submit(image, decision, event).result()

    def submit(self, image: np.ndarray, decision: TriageDecision,
               event: TagEvent) -> concurrent.futures.Future[TagEvent]:
        """Start one call (the image is encoded here, on the caller's thread); the future's result is the
        event with the escalation merged in. Cancelling the future cancels the call."""
        done: concurrent.futures.Future[TagEvent] = concurrent.futures.Future()
        try:
            request = self._request(image, decision, event)
        except (ValueError, cv2.error) as exc:
            outcome = EscalationOutcome("rejected", reason=f"the frame could not be encoded for the gateway: {exc}")
            done.set_result(merge(event, outcome, None))
            return done
        return asyncio.run_coroutine_threadsafe(self._merged(request, event), self._loop)

    def ask(self, image: np.ndarray, decision: TriageDecision,
            event: TagEvent) -> tuple[EscalationOutcome, VlmAnswer | None]:
        """One Describe call: how it ended, and the gateway's answer when it answered (nothing merged)."""
        try:
            request = self._request(image, decision, event)
        except (ValueError, cv2.error) as exc:
            return EscalationOutcome("rejected", reason=f"the frame could not be encoded for the gateway: {exc}"), None
        return asyncio.run_coroutine_threadsafe(self._describe(request), self._loop).result()

    def _request(self, image: np.ndarray, decision: TriageDecision, event: TagEvent) -> pb.DescribeRequest:
        c = self.config
        return build_request(image, event, decision, template_id=c.template_id, max_side=c.image_max_side,
                             jpeg_quality=c.jpeg_quality, crop_margin=c.crop_margin, max_crops=c.max_crops)

    async def _merged(self, request: pb.DescribeRequest, event: TagEvent) -> TagEvent:
        outcome, answer = await self._describe(request)
        return merge(event, outcome, answer)

    async def _describe(self, request: pb.DescribeRequest) -> tuple[EscalationOutcome, VlmAnswer | None]:
        result = await self._client.describe(request, self.config.call_deadline_s)
        answer = result.answer
        outcome = EscalationOutcome(result.status, reason=result.reason, model=answer.model if answer else None,
                                    latency_ms=round(result.latency_ms, 2),
                                    description=answer.description if answer else None)
        return outcome, answer

    def close(self) -> None:
        """Close the channel (calls still in flight are cancelled) and stop the loop's thread."""
        try:
            asyncio.run_coroutine_threadsafe(self._client.close(grace=None), self._loop).result()
            asyncio.run_coroutine_threadsafe(self._loop.shutdown_asyncgens(), self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
