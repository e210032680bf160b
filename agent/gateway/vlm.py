"""The VLM behind the gateway: Ollama's ``/api/chat`` through the official ``ollama`` client.

:class:`OllamaVlm` is the only code that talks to Ollama. It sends one
non-streaming chat per attempt (system prompt, user prompt with the frame and
crops as images, the answer schema in ``format``, a low temperature, an explicit
``num_ctx`` and ``keep_alive``, and ``truncate: false`` so that Ollama refuses a
prompt longer than the context instead of silently dropping the message with the
images or cutting it), checks the answer against the schema and asks once more
when it does not match.

The model is kept loaded by a :class:`~agent.gateway.keeper.ModelKeeper`: the
health check (:meth:`OllamaVlm.check`) starts a load when ``/api/ps`` does not
list the model, and a call that finds a load in progress waits for it within its
deadline (see :mod:`agent.gateway.keeper`).

Before each attempt the prompt is fitted into the model's context: its tokens are
estimated (text: one per 3 UTF-8 bytes, a deliberate overestimate; each image
``ollama.image_tokens``, 768 by default as Ollama counts), ``num_predict`` is kept
free for the answer, and crops are left out, last first, then the reference image
of a good part, until it fits; the answer's ``notes`` say so. The context is ``ollama.num_ctx`` (unset: the model's
Modelfile ``num_ctx`` from ``/api/show`` ``parameters``, else 4096), capped at the
model's trained length (``/api/show`` ``model_info``); it is sent with every call
and with the preload, so that Ollama never loads the model twice for two sizes.

Every failure is translated into the :class:`~agent.errors.VlmError` subclass
that names its gRPC status:

    ollama.ResponseError 404          VlmModelMissing   FAILED_PRECONDITION
    ollama.ResponseError 503          VlmUnavailable    UNAVAILABLE  (Ollama's queue is full)
    ollama.ResponseError 400          RequestRejected   INVALID_ARGUMENT; VlmModelFailed when the
                                                        prompt exceeds the context; VlmModelMissing
                                                        when the model cannot take images
    500 "missing data required for image input" (a model without vision), "model requires more
    system memory", a runner that died twice
                                      VlmModelFailed    FAILED_PRECONDITION (health NOT_SERVING too)
    500 a runner that died once       VlmUnavailable    UNAVAILABLE  (the model is loaded again)
    the model is still loading when the deadline nears
                                      VlmLoading        UNAVAILABLE  ("loading: ...")
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
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import httpx
import ollama
import pydantic

from agent.errors import (
    RequestRejected,
    VlmError,
    VlmInvalidAnswer,
    VlmLoading,
    VlmModelFailed,
    VlmModelMissing,
    VlmTimeout,
    VlmUnavailable,
)
from agent.gateway.chatbody import ChatBody
from agent.gateway.config import OllamaConfig
from agent.gateway.keeper import ModelKeeper, is_memory_error
from agent.gateway.templates import Answer, InvalidAnswer, Prompt, parse_answer
from agent.redact import redact

__all__ = ["OllamaVlm", "Vlm", "VlmResult"]

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 2  # the first call and one retry when its answer is invalid
_NS_PER_MS = 1_000_000
_BYTES_PER_TOKEN = 3  # LLaMA tokenizers average ~4 bytes per token on English; JSON and numbers run denser
_MESSAGE_TOKENS = 8  # the chat template's role markers around each message
DEFAULT_NUM_CTX = 4096  # Ollama's OLLAMA_CONTEXT_LENGTH default from v0.9 (api-facts 1.5)
_QUICK_LOAD_S = 2.0  # how long a health check waits for a load it started before it says "loading"
_OVERFLOW_WORDS = ("exceeds the context length", "exceeds the available context size", "exceed_context_size")


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
    notes: tuple[str, ...] = ()
    """What the gateway changed to get the answer (crops left out to fit the context)."""


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
        self.keeper = ModelKeeper(client, config, num_ctx=lambda: self.num_ctx, on_change=self._load_ended)
        self.on_load_end: Callable[[], None] | None = None
        """Called when a load ends that a health check reported as "loading" (the gateway's health looks again)."""
        self._said_loading = False
        self.num_ctx = config.num_ctx or DEFAULT_NUM_CTX
        """The context the calls (and the preload) get: ollama.num_ctx, else the Modelfile's, else 4096; capped
        at the model's trained length. Settled by the health check's /api/show."""

    @classmethod
    def from_config(cls, config: OllamaConfig) -> OllamaVlm:
        """An OllamaVlm with its own AsyncClient and explicit timeouts (the client has none by default)."""
        timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        return cls(ollama.AsyncClient(host=config.host, timeout=timeout), config)

    async def aclose(self) -> None:
        await self.keeper.aclose()
        await self._client.close()  # type: ignore[no-untyped-call]  # untyped in ollama 0.6

    # -- one question -----------------------------------------------------------------------

    async def ask(self, prompt: Prompt, timeout: float | None = None) -> VlmResult:
        """Ask about one frame; retry once on an invalid answer. ``timeout`` (seconds) is the caller's
        deadline, capped by ``ollama.timeout_s``. Raises a VlmError subclass or RequestRejected."""
        budget = self._config.timeout_s if timeout is None else min(timeout, self._config.timeout_s)
        deadline = time.monotonic() + budget
        await self._wait_until_loaded(deadline, budget)
        crops, references = prompt.crops, prompt.references
        vlm_ms = 0.0
        problem = ""
        retry: list[dict[str, Any]] = []
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                prompt = self._fit(prompt, retry)
            except VlmModelFailed:
                if not retry:
                    raise
                problem += " (a retry showing it does not fit the model's context)"
                attempt -= 1
                break  # report the bad answer
            messages = [*self._messages(prompt), *retry]
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
                retry = [{"role": "assistant", "content": content[:4000]},
                         {"role": "user", "content": f"That answer is not valid: {problem}. Answer again with "
                          "only one JSON object that matches the schema."}]
                continue
            notes = self._fit_notes(crops, references, prompt)
            return VlmResult(answer=answer, model=response.model or self.model, attempts=attempt, vlm_ms=vlm_ms,
                             load_ms=(response.load_duration or 0) / _NS_PER_MS,
                             prompt_tokens=response.prompt_eval_count or 0, answer_tokens=response.eval_count or 0,
                             notes=notes)
        raise VlmInvalidAnswer(f"the VLM ({self.model}) gave no valid answer in {attempt} attempt(s); the last "
                               f"one {problem}; expected JSON matching the answer schema")

    def _fit_notes(self, crops: int, references: int, prompt: Prompt) -> tuple[str, ...]:
        left_out = ([f"{crops - prompt.crops} of {crops} crop(s)"] if prompt.crops < crops else []) + (
            ["the reference image of a good part"] if prompt.references < references else [])
        if not left_out:
            return ()
        return (f"{' and '.join(left_out)} left out to fit the model's context ({self.num_ctx} tokens, "
                f"{self._config.image_tokens} per image, {self._config.num_predict} kept for the answer)",)

    @staticmethod
    def _messages(prompt: Prompt) -> list[dict[str, Any]]:
        return [{"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user, "images": list(prompt.images)}]

    def estimate_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """An overestimate of the prompt tokens of ``messages`` (see the module doc)."""
        return sum(_MESSAGE_TOKENS + -(-len(str(m.get("content", "")).encode("utf-8")) // _BYTES_PER_TOKEN)
                   + self._config.image_tokens * len(m.get("images") or []) for m in messages)

    def _fit(self, prompt: Prompt, retry: Sequence[Mapping[str, Any]]) -> Prompt:
        """``prompt`` with as many crops as fit the context beside ``retry`` and the answer; VlmModelFailed
        when even the frame alone does not."""
        room = self.num_ctx - self._config.num_predict
        while (need := self.estimate_tokens([*self._messages(prompt), *retry])) > room and (
                prompt.crops > 0 or prompt.references > 0):  # crops first, last first; then the reference image
            prompt = prompt.keep_crops(prompt.crops - 1) if prompt.crops > 0 else prompt.without_reference()
        if need > room:
            raise VlmModelFailed(
                f"the question needs about {need} tokens ({len(prompt.images)} image(s) at ollama.image_tokens="
                f"{self._config.image_tokens}) and the answer ollama.num_predict={self._config.num_predict}, more "
                f"than the model's context of {self.num_ctx} tokens; raise ollama.num_ctx")
        return prompt

    async def _wait_until_loaded(self, deadline: float, budget: float) -> None:
        """Fail at once when the model failed for good; wait for a load in progress, leaving a fifth of the
        deadline (at most 1 s) to say "loading" before the caller's deadline passes."""
        keeper = self.keeper
        if keeper.state == "failed":
            raise VlmModelFailed(keeper.reason)
        if keeper.state != "loading":
            return
        if await keeper.wait(deadline - time.monotonic() - min(1.0, budget / 5)):
            return
        state: str = keeper.state  # changed while waiting
        if state == "failed":
            raise VlmModelFailed(keeper.reason)
        raise VlmLoading(f"{keeper.loading_reason}; the call's deadline ({budget:.1f} s) comes first, retry later")

    async def _chat(self, messages: Sequence[Mapping[str, Any]], schema: Mapping[str, Any], left: float,
                    budget: float) -> ollama.ChatResponse:
        if left <= 0:
            raise VlmTimeout(f"no time left for another call to Ollama within the deadline of {budget:.1f} s")
        # the client's chat() has no `truncate`: the request is the same, sent through its _request
        options = {"temperature": self._config.temperature, "num_ctx": self.num_ctx,
                   "num_predict": self._config.num_predict}
        body = ChatBody({"model": self.model, "messages": messages, "stream": False, "format": dict(schema),
                         "options": options, "keep_alive": self._config.keep_alive, "truncate": False})
        try:  # the body's base64 is written in pieces: a frame and crops near the limits never hold the loop
            return await asyncio.wait_for(
                self._client._request(ollama.ChatResponse, "POST", "/api/chat", content=body.stream(),
                                      headers={"Content-Length": str(body.length)}, stream=False),
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
        if status == 400 and any(word in text for word in _OVERFLOW_WORDS):
            return VlmModelFailed(f"the question does not fit the model's context of {self.num_ctx} tokens "
                                  f"(Ollama: {text}); raise ollama.num_ctx or ollama.image_tokens")
        if status == 400 and "support" in text:
            return VlmModelMissing(f"model {self.model!r} refused the request ({text}); configure a vision "
                                   "model such as llava:7b")
        if status == 400:
            return RequestRejected(f"Ollama refused the request as bad: {text}")
        return self._server_error(status, text)

    def _server_error(self, status: int, text: str) -> VlmError:
        if "missing data required for image input" in text:
            reason = (f"model {self.model!r} cannot take images ({text}); configure a vision model such as "
                      "llava:7b")
        elif is_memory_error(text):
            reason = (f"model {self.model!r} does not fit this host's memory ({text}); free memory, use a smaller "
                      "model or quantization, or lower ollama.num_ctx")
        elif "runner process has terminated" in text:
            if not self.keeper.runner_died(text):
                return VlmUnavailable(f"the runner of model {self.model!r} died ({text}); Ollama loads it again, "
                                      "retry later")
            return VlmModelFailed(self.keeper.reason)
        else:
            return VlmUnavailable(f"Ollama failed (HTTP {status}): {text}")
        self.keeper.failed(reason)
        return VlmModelFailed(reason)

    # -- health -----------------------------------------------------------------------------

    async def check(self) -> str | None:
        """None when Ollama is reachable and has the model loaded; else the reason why not. Starts a load
        (see :mod:`agent.gateway.keeper`) when the model is not loaded; the reason then starts with
        "loading:"."""
        problem = await self._check_show()
        if problem is not None or self.keeper.unloads_at_once:
            return problem  # keep_alive 0: the model is unloaded after every call, on purpose
        keeper = self.keeper
        if keeper.state == "failed":
            keeper.start_load()  # again, once RETRY_FAILED_S has passed
        if keeper.state in ("loading", "failed"):
            return self._loading_or(keeper.reason)
        loaded = await self._listed_in_ps()
        if isinstance(loaded, str):
            return loaded
        if not loaded:
            keeper.start_load()  # and give a quick load (a warm host) the time to say SERVING at once
            if not await keeper.wait(min(_QUICK_LOAD_S, self._config.connect_timeout_s)):
                return self._loading_or(keeper.reason)
        keeper.seen_loaded()
        return None

    def _loading_or(self, reason: str) -> str:
        """The loading reason while a load runs (and remember to say when it ends), else ``reason``."""
        if self.keeper.state != "loading":
            return reason
        self._said_loading = True
        return self.keeper.loading_reason

    def _load_ended(self) -> None:
        if self._said_loading and self.on_load_end is not None:
            self._said_loading = False
            self.on_load_end()

    async def _check_show(self) -> str | None:
        """Ask /api/show: the model is pulled and takes images; reads its trained context length."""
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
        wanted = self._config.num_ctx or _modelfile_num_ctx(info.parameters or "") or DEFAULT_NUM_CTX
        trained = _trained_context(info.modelinfo or {})
        self.num_ctx = min(wanted, trained) if trained else wanted
        return None

    async def _listed_in_ps(self) -> bool | str:
        """Whether /api/ps lists the model (loaded or loading), or why that cannot be told."""
        try:
            running = await asyncio.wait_for(self._client.ps(), timeout=self._config.connect_timeout_s + 5.0)
        except ollama.ResponseError as exc:
            return f"Ollama at {self.host} answered /api/ps with HTTP {exc.status_code}: {str(exc.error)[:200]}"
        except (ConnectionError, asyncio.TimeoutError, httpx.HTTPError, json.JSONDecodeError,
                pydantic.ValidationError) as exc:
            return f"Ollama at {self.host} did not answer /api/ps ({type(exc).__name__})"
        wanted = _full_name(self.model)
        return any(_full_name(m.model or m.name or "") == wanted for m in running.models)

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


def _modelfile_num_ctx(parameters: str) -> int | None:
    """``num_ctx`` from /api/show's ``parameters`` (the Modelfile's PARAMETER lines), None when not set."""
    match = re.search(r"^num_ctx\s+(\d+)\s*$", parameters, re.MULTILINE)
    return int(match.group(1)) if match else None


def _trained_context(model_info: Mapping[str, Any]) -> int | None:
    """``<architecture>.context_length`` from /api/show's model_info (None when absent)."""
    value = model_info.get(f"{model_info.get('general.architecture', '')}.context_length")
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def _full_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
