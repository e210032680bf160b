"""Keeping the gateway's model loaded in Ollama, apart from any call.

Ollama loads a model on the first request that needs it and ties the load to that
request: when its client disconnects (a call's deadline passes: 15 s on the agent by
default), the load is aborted and the runner thrown away. A cold load longer than a
call's deadline (a CPU or Jetson box, after an Ollama restart, after ``keep_alive``
ran out) would then be started and aborted by every call, for ever. So the gateway
loads the model itself (:class:`ModelKeeper`):

* at start, and whenever the health poll finds the model not loaded (``/api/ps``):
  after an Ollama restart, after ``keep_alive`` ran out, after its runner died. The
  load is Ollama's preload (a chat with no messages) with the calls' ``num_ctx`` (a
  different one would load the model again) and ``keep_alive``, bounded by
  ``ollama.load_timeout_s``, in a task of its own that no call cancels;
* while it loads, the health service says NOT_SERVING with a reason starting
  "loading:", and a call waits for the load within its deadline
  (:class:`~agent.errors.VlmLoading` when the deadline comes first);
* a load that does not fit the memory, or a runner that dies
  :data:`RUNNER_DEATHS` times within :data:`RUNNER_DEATH_WINDOW_S`, is a
  permanent failure: calls fail at once with FAILED_PRECONDITION and the reason,
  health says NOT_SERVING with it, and the load is tried again every
  :data:`RETRY_FAILED_S`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Literal

import httpx
import ollama
import pydantic

from agent.gateway.config import OllamaConfig
from agent.redact import redact

__all__ = ["RETRY_FAILED_S", "RUNNER_DEATHS", "RUNNER_DEATH_WINDOW_S", "ModelKeeper", "State"]

log = logging.getLogger(__name__)

State = Literal["unloaded", "loading", "ready", "failed"]
RETRY_FAILED_S = 60.0
RUNNER_DEATHS = 2
RUNNER_DEATH_WINDOW_S = 300.0
_ZERO_DURATION = re.compile(r"^-?0+(?:\.0*)?(?:ns|us|µs|ms|s|m|h)?$")
_MEMORY_WORDS = ("system memory", "out of memory", "cudaMalloc failed", "unable to allocate")


def is_memory_error(text: str) -> bool:
    """Ollama's words for a model that does not fit (``model requires more system memory (...)``, CUDA OOM)."""
    return any(word.lower() in text.lower() for word in _MEMORY_WORDS)


class ModelKeeper:
    """The load state of one model in one Ollama. ``on_change`` is called after each load ends (the
    gateway's health monitor looks again at once)."""

    def __init__(self, client: ollama.AsyncClient, config: OllamaConfig, *, num_ctx: Callable[[], int],
                 on_change: Callable[[], None] | None = None) -> None:
        self._client = client
        self._config = config
        self._num_ctx = num_ctx  # the calls' context: a preload with another would be loaded again by the calls
        self._host = redact(config.host)  # reasons reach gRPC callers: never the credentials in ollama.host
        self.on_change = on_change
        self.state: State = "unloaded"
        self.reason = f"model {config.model!r} is not loaded in Ollama yet"
        self.since = time.monotonic()
        self.loads = 0
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._done.set()
        self._deaths: list[float] = []

    @property
    def unloads_at_once(self) -> bool:
        """``ollama.keep_alive`` is zero: Ollama unloads the model after each call (a preload would be an
        unload request), so the gateway does not keep it loaded."""
        value = self._config.keep_alive
        return value == 0 if isinstance(value, int) else _ZERO_DURATION.match(value) is not None

    @property
    def loading_reason(self) -> str:
        return (f"loading: Ollama is loading model {self._config.model!r} "
                f"({time.monotonic() - self.since:.0f} s so far; at most ollama.load_timeout_s="
                f"{self._config.load_timeout_s:g} s)")

    def start_load(self) -> None:
        """Start a load unless one runs, or the last one failed for good less than RETRY_FAILED_S ago."""
        if (self._task is not None and not self._task.done()) or self.unloads_at_once:
            return
        if self.state == "failed" and time.monotonic() - self.since < RETRY_FAILED_S:
            return
        self._set("loading", "")
        self._task = asyncio.create_task(self._load(), name="ollama-preload")

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a load in progress; True when the model is then ready."""
        if timeout > 0 and not self._done.is_set():
            try:
                await asyncio.wait_for(self._done.wait(), timeout)
            except asyncio.TimeoutError:
                return False
        return self.state == "ready"

    def seen_loaded(self) -> None:
        """``/api/ps`` lists the model (loaded by us, by a call, or by someone else)."""
        if self.state in ("unloaded", "ready"):
            self._set("ready", "")

    def failed(self, reason: str) -> None:
        """A call met a permanent failure (no vision, out of memory)."""
        if self.state != "failed":
            log.warning("model cannot serve: %s", reason, extra={"model": self._config.model})
        self._set("failed", reason)

    def runner_died(self, text: str) -> bool:
        """A call found the model's runner dead; True (and ``failed``) when it died RUNNER_DEATHS times
        within RUNNER_DEATH_WINDOW_S. Otherwise the model counts as unloaded and is loaded again."""
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RUNNER_DEATH_WINDOW_S] + [now]
        if len(self._deaths) >= RUNNER_DEATHS:
            self.failed(f"the runner of model {self._config.model!r} died {len(self._deaths)} times within "
                        f"{RUNNER_DEATH_WINDOW_S:g} s (last: {text}); see Ollama's log (`journalctl -u ollama`): "
                        "usually the model does not fit the GPU or memory; try a smaller model or quantization, "
                        "or a lower ollama.num_ctx")
            return True
        self._set("unloaded", f"the runner of model {self._config.model!r} died ({text})")
        self.start_load()
        return False

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)

    async def _load(self) -> None:
        start = time.monotonic()
        model = self._config.model
        try:
            preload = self._client.chat(model=model, messages=[], options={"num_ctx": self._num_ctx()},
                                        keep_alive=self._config.keep_alive)
            await asyncio.wait_for(preload, self._config.load_timeout_s)
        except asyncio.TimeoutError:
            self._set("unloaded", f"Ollama did not load model {model!r} within ollama.load_timeout_s="
                      f"{self._config.load_timeout_s:g} s; it is tried again at the next health check")
        except ollama.ResponseError as exc:
            self._load_refused(exc.status_code, str(exc.error)[:300])
        except (ConnectionError, httpx.HTTPError, json.JSONDecodeError, pydantic.ValidationError) as exc:
            self._set("unloaded", f"loading model {model!r} failed: Ollama at {self._host} is unreachable "
                      f"or failed ({type(exc).__name__})")
        else:
            self.loads += 1
            self._set("ready", "")
            log.info("model loaded in Ollama", extra={"model": model, "load_s": round(time.monotonic() - start, 2)})
        finally:
            if self.state != "ready":
                log.warning("model not loaded: %s", self.reason, extra={"model": model})
            if self.on_change is not None:
                self.on_change()

    def _load_refused(self, status: int, text: str) -> None:
        model = self._config.model
        if status == 404:
            self._set("failed", f"model {model!r} is not pulled in Ollama at {self._host}; run "
                      f"`ollama pull {model}` on the gateway host")
        elif is_memory_error(text):
            self._set("failed", f"model {model!r} does not fit this host's memory ({text}); free memory, use a "
                      "smaller model or quantization, or lower ollama.num_ctx")
        else:
            self._set("unloaded", f"Ollama failed to load model {model!r} (HTTP {status}): {text}")

    def _set(self, state: State, reason: str) -> None:
        self.state, self.since = state, time.monotonic()
        self.reason = reason or ("ready" if state == "ready" else self.loading_reason)
        if state == "loading":
            self._done.clear()
        else:
            self._done.set()
