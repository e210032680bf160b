"""Escalation of batch items to the gateway (I/O): one synchronous Describe call per uncertain item.

The daemon's pieces, called in order instead of from its escalation thread: the request
(:func:`agent.escalation.request.build_request`), the gRPC client (:class:`EscalationClient`, on a private
event loop that this object owns), the status mapping of the call's result, and the merge rule
(:func:`agent.escalation.merge.merge`). Items are tagged one at a time, so there is no rate limit, no
near-duplicate cache and no circuit breaker here: each uncertain item gets its own call, with the config's
``escalation.call_deadline_s``, and its escalation status says how the call ended.
"""

from __future__ import annotations

import asyncio

import cv2
import grpc
import numpy as np

from agent.config.models import EscalationConfig
from agent.escalation.client import EscalationClient, channel_credentials
from agent.escalation.merge import VlmAnswer, merge
from agent.escalation.request import build_request
from agent.publish.event import EscalationOutcome, TagEvent
from agent.triage.policy import TriageDecision


class GatewayEscalation:
    """``escalate(image, decision, event) -> event`` through the gateway; :meth:`close` when done."""

    def __init__(self, config: EscalationConfig, credentials: grpc.ChannelCredentials | None = None) -> None:
        if config.gateway is None:
            raise ValueError("escalation.gateway is not set")
        if credentials is None and config.tls is not None:
            credentials = channel_credentials(config.tls)  # ConfigError naming the file, before anything runs
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._client = self._loop.run_until_complete(self._connect(credentials))

    async def _connect(self, credentials: grpc.ChannelCredentials | None) -> EscalationClient:
        return EscalationClient.connect(self.config, credentials)  # on the loop that will use it

    def __call__(self, image: np.ndarray, decision: TriageDecision, event: TagEvent) -> TagEvent:
        outcome, answer = self.ask(image, decision, event)
        return merge(event, outcome, answer)

    def ask(self, image: np.ndarray, decision: TriageDecision,
            event: TagEvent) -> tuple[EscalationOutcome, VlmAnswer | None]:
        """One Describe call: how it ended, and the gateway's answer when it answered (nothing merged)."""
        c = self.config
        try:
            request = build_request(image, event, decision, template_id=c.template_id, max_side=c.image_max_side,
                                    jpeg_quality=c.jpeg_quality, crop_margin=c.crop_margin, max_crops=c.max_crops)
        except (ValueError, cv2.error) as exc:
            return EscalationOutcome("rejected", reason=f"the frame could not be encoded for the gateway: {exc}"), None
        result = self._loop.run_until_complete(self._client.describe(request, c.call_deadline_s))
        answer = result.answer
        outcome = EscalationOutcome(result.status, reason=result.reason, model=answer.model if answer else None,
                                    latency_ms=round(result.latency_ms, 2),
                                    description=answer.description if answer else None)
        return outcome, answer

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._client.close(grace=None))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._loop.close()
