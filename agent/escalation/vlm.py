"""The VLM behind the gateway: Ollama's ``/api/chat`` through the official ``ollama`` client.

:class:`OllamaVlm` is the only code that talks to Ollama. It sends one
non-streaming chat per attempt (system prompt, user prompt with the frame and
crops as images, the answer schema in ``format``, a low temperature, an explicit
``num_ctx`` and ``keep_alive``), checks the answer against the schema and asks
once more when it does not match. Every failure is translated into the
:class:`~agent.errors.VlmError` subclass that names its gRPC status:

    ollama.ResponseError 404          VlmModelMissing   FAILED_PRECONDITION
    ollama.ResponseError 503          VlmUnavailable    UNAVAILABLE  (Ollama's queue is full)
    ollama.ResponseError 400          RequestRejected   INVALID_ARGUMENT, or VlmModelMissing when
                                                        the model cannot take images
    other HTTP errors, a broken connection, connection refused
                                      VlmUnavailable    UNAVAILABLE
    the deadline or ollama.timeout_s  VlmTimeout        DEADLINE_EXCEEDED
    an answer not matching the schema twice
                                      VlmInvalidAnswer  ABORTED

The deadline is the caller's (``timeout=``, the gRPC call's time remaining)
capped by ``ollama.timeout_s``. Cancelling the awaiting task (a cancelled or
expired gRPC call) cancels the HTTP request: httpx closes the connection and
Ollama stops working on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import httpx
import ollama
import pydantic

from agent.config.gateway import OllamaConfig
from agent.errors import RequestRejected, VlmError, VlmInvalidAnswer, VlmModelMissing, VlmTimeout, VlmUnavailable
from agent.escalation.templates import Answer, InvalidAnswer, Prompt, parse_answer
from agent.redact import redact

__all__ = ["OllamaVlm", "Vlm", "VlmResult"]

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 2  # the first call and one retry when its answer is invalid
_NS_PER_MS = 1_000_000


@dataclasses.dataclass(frozen=True)
class VlmResult:
    """A checked answer and what it cost (Ollama's durations, converted from nanoseconds)."""

    answer: Answer
    model: str
    attempts: int
    vlm_ms: float
    """Ollama's total_duration summed over the attempts (0 where Ollama omitted it)."""
    load_ms: float
    prompt_tokens: int
    """Ollama's prompt_eval_count of the answering attempt (0 where omitted: a cached prompt)."""
    answer_tokens: int
    """Ollama's eval_count of the answering attempt."""


class Vlm(Protocol):
    """What the gateway needs from a VLM; :class:`OllamaVlm` is the implementation."""

    model: str

    async def ask(self, prompt: Prompt, timeout: float | None = None) -> VlmResult: ...

    async def check(self) -> str | None: ...

    async def aclose(self) -> None: ...


class OllamaVlm:
    """A VLM served by Ollama. ``client`` is an ``ollama.AsyncClient`` (``from_config`` makes one)."""

    def __init__(self, client: ollama.AsyncClient, config: OllamaConfig) -> None:
        self._client = client
        self._config = config
        self.model = config.model
        self.host = redact(config.host)  # shown in messages that reach gRPC callers; the client has the real one
        self._options: Mapping[str, Any] = {
            "temperature": config.temperature, "num_ctx": config.num_ctx, "num_predict": config.num_predict}

    @classmethod
    def from_config(cls, config: OllamaConfig) -> OllamaVlm:
        """An OllamaVlm with its own AsyncClient and explicit timeouts (the client has none by default)."""
        timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        return cls(ollama.AsyncClient(host=config.host, timeout=timeout), config)

    async def aclose(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]  # untyped in ollama 0.6

    # -- one question -----------------------------------------------------------------------

    async def ask(self, prompt: Prompt, timeout: float | None = None) -> VlmResult:
        """Ask about one frame; retry once on an invalid answer. ``timeout`` (seconds) is the caller's
        deadline, capped by ``ollama.timeout_s``. Raises a VlmError subclass or RequestRejected."""
        budget = self._config.timeout_s if timeout is None else min(timeout, self._config.timeout_s)
        deadline = time.monotonic() + budget
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user, "images": list(prompt.images)},
        ]
        vlm_ms = 0.0
        problem = ""
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            response = await self._chat(messages, prompt.schema, deadline - time.monotonic(), budget)
            vlm_ms += (response.total_duration or 0) / _NS_PER_MS
            content = response.message.content or ""
            try:
                answer = parse_answer(content, prompt.defect_types)
            except InvalidAnswer as exc:
                problem = str(exc)
                if response.done_reason == "length":
                    problem += f" (the answer was cut off at num_predict={self._config.num_predict} tokens)"
                log.info("invalid VLM answer", extra={"attempt": attempt, "model": self.model, "problem": problem})
                messages = [*messages[:2], {"role": "assistant", "content": content[:4000]},
                            {"role": "user", "content": f"That answer is not valid: {problem}. Answer again with "
                             "only one JSON object that matches the schema."}]
                continue
            return VlmResult(answer=answer, model=response.model or self.model, attempts=attempt, vlm_ms=vlm_ms,
                             load_ms=(response.load_duration or 0) / _NS_PER_MS,
                             prompt_tokens=response.prompt_eval_count or 0, answer_tokens=response.eval_count or 0)
        raise VlmInvalidAnswer(f"the VLM ({self.model}) gave no valid answer in {_MAX_ATTEMPTS} attempts; the last "
                               f"one {problem}; expected JSON matching the answer schema")

    async def _chat(self, messages: Sequence[Mapping[str, Any]], schema: Mapping[str, Any], left: float,
                    budget: float) -> ollama.ChatResponse:
        if left <= 0:
            raise VlmTimeout(f"no time left for another call to Ollama within the deadline of {budget:.1f} s")
        try:
            return await asyncio.wait_for(
                self._client.chat(model=self.model, messages=messages, format=dict(schema), options=self._options,
                                  keep_alive=self._config.keep_alive, stream=False),
                timeout=left)
        except asyncio.TimeoutError:
            if budget >= self._config.timeout_s:
                raise VlmTimeout(f"Ollama did not answer within ollama.timeout_s={self._config.timeout_s:g} s") \
                    from None
            raise VlmTimeout(f"Ollama did not answer within the call's deadline ({budget:.2f} s)") from None
        except ollama.ResponseError as exc:
            raise self._response_error(exc) from exc
        except ConnectionError as exc:  # the client's translation of httpx.ConnectError
            raise VlmUnavailable(f"Ollama at {self.host} is unreachable (connection refused); start it "
                                 "(`systemctl start ollama` or `ollama serve`) or fix ollama.host") from exc
        except httpx.ConnectTimeout as exc:
            raise VlmUnavailable(f"Ollama at {self.host} is unreachable (no connection within "
                                 f"{self._config.connect_timeout_s:g} s); check ollama.host and the network") from exc
        except httpx.TimeoutException as exc:  # not wrapped by the client
            raise VlmTimeout(f"Ollama did not answer within ollama.timeout_s={self._config.timeout_s:g} s "
                             f"({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise VlmUnavailable(f"the connection to Ollama at {self.host} failed: {type(exc).__name__}: "
                                 f"{exc or 'closed'}") from exc
        except (json.JSONDecodeError, pydantic.ValidationError) as exc:
            raise VlmUnavailable(f"Ollama at {self.host} sent a reply that is not a chat response: "
                                 f"{str(exc)[:200]}") from exc

    def _response_error(self, exc: ollama.ResponseError) -> VlmError | RequestRejected:
        status, text = exc.status_code, str(exc.error)[:300]
        if status == 404:
            return VlmModelMissing(f"Ollama at {self.host} has no model {self.model!r} ({text}); run "
                                   f"`ollama pull {self.model}` (or `ollama create` for a Modelfile variant) on the "
                                   "gateway host")
        if status == 503:
            return VlmUnavailable(f"Ollama is busy ({text}); retry later, or raise OLLAMA_MAX_QUEUE on the "
                                  "gateway host")
        if status == 400 and "support" in text:
            return VlmModelMissing(f"model {self.model!r} refused the request ({text}); configure a vision "
                                   "model such as llava:7b")
        if status == 400:
            return RequestRejected(f"Ollama refused the request as bad: {text}")
        return VlmUnavailable(f"Ollama failed (HTTP {status}): {text}")

    # -- health -----------------------------------------------------------------------------

    async def check(self) -> str | None:
        """None when Ollama is reachable and has the model (able to take images); else the reason why not."""
        try:
            info = await asyncio.wait_for(self._client.show(self.model),
                                          timeout=self._config.connect_timeout_s + 5.0)
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                return (f"model {self.model!r} is not pulled in Ollama at {self.host}; run "
                        f"`ollama pull {self.model}` on the gateway host")
            return f"Ollama at {self.host} answered /api/show with HTTP {exc.status_code}: {str(exc.error)[:200]}"
        except ConnectionError:
            return f"Ollama at {self.host} is unreachable (connection refused); is `ollama serve` running?"
        except (asyncio.TimeoutError, httpx.TimeoutException):
            return f"Ollama at {self.host} did not answer /api/show in time"
        except httpx.HTTPError as exc:
            return f"the connection to Ollama at {self.host} failed: {type(exc).__name__}: {exc}"
        except (json.JSONDecodeError, pydantic.ValidationError) as exc:
            return f"Ollama at {self.host} sent an /api/show reply that is not Ollama's: {str(exc)[:200]}"
        if info.capabilities is not None and "vision" not in info.capabilities:
            return (f"model {self.model!r} cannot take images (capabilities: {', '.join(info.capabilities)}); "
                    "configure a vision model such as llava:7b")
        return None

    async def list_models(self) -> tuple[str, ...] | str:
        """The names of the models pulled in Ollama (``/api/tags``), or why they cannot be listed."""
        try:
            listing = await asyncio.wait_for(self._client.list(), timeout=self._config.connect_timeout_s + 5.0)
        except ollama.ResponseError as exc:
            return f"Ollama at {self.host} answered /api/tags with HTTP {exc.status_code}: {str(exc.error)[:200]}"
        except ConnectionError:
            return f"Ollama at {self.host} is unreachable (connection refused)"
        except (asyncio.TimeoutError, httpx.TimeoutException):
            return f"Ollama at {self.host} did not answer /api/tags in time"
        except (httpx.HTTPError, json.JSONDecodeError, pydantic.ValidationError) as exc:
            return f"listing Ollama's models at {self.host} failed: {type(exc).__name__}: {str(exc)[:200]}"
        return tuple(m.model for m in listing.models if m.model)
