"""The model side of the fake Ollama: loading a model, fitting a chat into its context, and the
grammar that ``format`` puts on the answer. Pure logic and a small load state machine; the HTTP
side is :mod:`tests.fakes.ollama`.

What each part copies from Ollama (ollama/ollama, ``server/`` and ``llm/``, 2025-2026):

* **Load** (``server/sched.go``, ``llm/server.go``): a request for a model that is not loaded
  makes the scheduler start a runner and wait for it (``WaitUntilRunning``) under *that
  request's* context: when the requesting client disconnects, the load is aborted and the runner
  thrown away. Requests for the same model that arrive meanwhile wait for the load. A loaded
  model stays for ``keep_alive`` after its last request (default 5m; negative: for ever; 0:
  unload at once) and ``/api/ps`` lists it, a loading model included (its ``expires_at`` is
  computed from the session duration while it loads). A chat with no messages (a generate with
  no prompt) only loads the model: ``done_reason`` "load". A load that does not fit the memory
  fails with 500 ``model requires more system memory (X) than is available (Y)``; a runner that
  dies answers 500 ``llama runner process has terminated: ...`` and the model is unloaded.
* **Context** (``server/prompt.go`` ``chatPrompt``, the runner's input check): the context is
  ``options.num_ctx`` (else the Modelfile's ``num_ctx``, else ``OLLAMA_CONTEXT_LENGTH``, 4096
  from v0.9), capped at the model's trained length. Each image counts
  :data:`IMAGE_TOKENS` = 768 tokens (the constant in ``chatPrompt``: "Clip images are
  represented as 768 tokens"). With ``truncate`` true (the default) the oldest messages are
  dropped, keeping the system messages and always the last message, until the rest fits; a
  prompt still too long is then cut by the runner from the front ("truncating input prompt"),
  images first. With ``truncate: false`` nothing is dropped and an overflow is 400
  :data:`INPUT_TOO_LONG`. Text tokens are estimated as one per 4 UTF-8 bytes plus
  :data:`MESSAGE_OVERHEAD` per message (the real count depends on the tokenizer).
* **Images** (``model/model.go`` ``ErrNoVisionModel``): images sent to a model without a vision
  projector fail in the runner with 500 :data:`NO_VISION`; ``/api/chat`` has no 400 capability
  check for images (``ChatHandler`` asks only for completion, tools and thinking).
* **format** (llama-server's ``json_schema``, ``grammars/README.md`` of llama.cpp): the answer
  is decoded under a grammar built from the schema, which enforces ``type``, ``properties``,
  ``required``, ``items``, ``enum``, ``const``, ``minItems``/``maxItems``,
  ``minLength``/``maxLength``, ``pattern``, ``anyOf``/``oneOf``/``allOf``, ``$ref``, and
  ``minimum``/``maximum`` (and the exclusive ones) **only for integers**; ``additionalProperties``
  defaults to false; everything else (number bounds, ``uniqueItems``, ``not``, ``if``...) is
  skipped silently. ``"json"`` only forces JSON. An answer cut off by ``num_predict`` (done_reason
  "length") can be any prefix.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

__all__ = [
    "DEFAULT_NUM_CTX", "IMAGE_TOKENS", "INPUT_TOO_LONG", "MESSAGE_OVERHEAD", "NO_VISION", "RUNNER_TERMINATED",
    "Fitted", "LoadFailed", "ModelState", "check_request", "enforced_schema", "fit_messages", "format_problem",
    "keep_alive_s", "out_of_memory", "text_tokens",
]

IMAGE_TOKENS = 768
DEFAULT_NUM_CTX = 4096
MESSAGE_OVERHEAD = 4
INPUT_TOO_LONG = "the input length exceeds the context length"
NO_VISION = "this model is missing data required for image input"
RUNNER_TERMINATED = "llama runner process has terminated: exit status 2"
NUM_KEEP = 4  # tokens the runner keeps at the front when it cuts a prompt
_ROLES = {"system", "user", "assistant", "tool"}
GO_DURATION = re.compile(r"^-?(?:0|(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+)$")
_DURATION_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# the keywords llama.cpp's json-schema-to-grammar turns into grammar rules (see the module doc)
_ENFORCED = frozenset({"type", "properties", "required", "items", "enum", "const", "minItems", "maxItems",
                       "minLength", "maxLength", "pattern", "anyOf", "oneOf", "allOf", "$ref", "$defs",
                       "definitions", "additionalProperties"})
_INTEGER_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})


def out_of_memory(need_gib: float, free_gib: float) -> str:
    """Ollama's message when a model does not fit (``llm/server.go``)."""
    return f"model requires more system memory ({need_gib:.1f} GiB) than is available ({free_gib:.1f} GiB)"


# -- requests ---------------------------------------------------------------------------------------


def check_request(body: Mapping[str, Any], messages_key: str = "messages") -> str:
    """Ollama's 400 message for a bad chat/generate body, or '' when it is acceptable."""
    if not body.get("model"):
        return "model is required"
    if not isinstance(body["model"], str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]*$", body["model"]):
        return f"invalid model name {body['model']!r}"
    fmt = body.get("format")
    if fmt not in (None, "", "json") and not (isinstance(fmt, dict) and isinstance(fmt.get("type", "object"), str)):
        return f'invalid format: {json.dumps(fmt)[:60]}; expected "json" or a JSON schema object'
    if isinstance(fmt, dict) and (problem := _schema_problem(fmt)):
        return f"invalid JSON schema in format: {problem}"
    if "options" in body and not isinstance(body["options"], dict):
        return "json: cannot unmarshal options into Go struct field ChatRequest.options of type map[string]any"
    if "truncate" in body and not isinstance(body["truncate"], bool):
        return "json: cannot unmarshal truncate into Go struct field ChatRequest.truncate of type bool"
    keep_alive = body.get("keep_alive")
    if keep_alive is not None and not isinstance(keep_alive, (int, float)) and not (
            isinstance(keep_alive, str) and GO_DURATION.match(keep_alive)):
        return f'time: invalid duration "{keep_alive}"'
    messages = body.get(messages_key) or []
    if messages_key == "messages" and not isinstance(messages, list):
        return "json: cannot unmarshal messages into Go struct field ChatRequest.messages of type []api.Message"
    images = list(body.get("images") or [])
    for message in messages if messages_key == "messages" else []:
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return f"invalid role {message.get('role') if isinstance(message, dict) else message!r}"
        images += message.get("images") or []
    for image in images:
        try:
            base64.b64decode(image, validate=True)
        except (binascii.Error, TypeError, ValueError):
            return "illegal base64 data at input byte 0"
    return ""


def keep_alive_s(value: Any) -> float:
    """``keep_alive`` in seconds: None is the 5m default, negative is for ever, 0 unloads at once."""
    if value is None:
        return 300.0
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)
    if text in ("0", "-0"):
        return 0.0
    sign = -1.0 if text.startswith("-") else 1.0
    total = sum(float(n) * _DURATION_UNITS_S[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text))
    return sign * total


# -- context ----------------------------------------------------------------------------------------


def text_tokens(text: str) -> int:
    """The fake's token count of a text: one per 4 UTF-8 bytes, rounded up."""
    return math.ceil(len(text.encode("utf-8")) / 4)


@dataclasses.dataclass(frozen=True)
class Fitted:
    """What the model gets of a chat after the context is applied."""

    num_ctx: int
    messages: tuple[Mapping[str, Any], ...]
    """The messages kept by ``chatPrompt`` (system messages and the newest ones that fit)."""
    dropped_messages: int
    prompt_tokens: int
    """Tokens the model evaluates (at most ``num_ctx``)."""
    truncated: bool
    """The runner cut the prompt from the front because it was still longer than ``num_ctx``."""
    images_seen: int
    """Images whose tokens survived (images sent minus images dropped or cut)."""


def _message_tokens(message: Mapping[str, Any], image_tokens: int) -> int:
    return MESSAGE_OVERHEAD + text_tokens(str(message.get("content") or "")) + image_tokens * len(
        message.get("images") or [])


def fit_messages(messages: Sequence[Mapping[str, Any]], num_ctx: int, *, truncate: bool,
                 image_tokens: int = IMAGE_TOKENS) -> Fitted | str:
    """Apply the context as Ollama does (module doc); a str is the 400 error when ``truncate`` is false."""
    kept = list(messages)
    if truncate:
        for start in range(len(messages)):
            system = [m for m in messages[:start] if m.get("role") == "system"]
            kept = [*system, *messages[start:]]
            if sum(_message_tokens(m, image_tokens) for m in kept) <= num_ctx:
                break
    total = sum(_message_tokens(m, image_tokens) for m in kept)
    images = sum(len(m.get("images") or []) for m in kept)
    if total <= num_ctx:
        return Fitted(num_ctx, tuple(kept), len(messages) - len(kept), total, False, images)
    if not truncate:
        return INPUT_TOO_LONG
    # the runner keeps NUM_KEEP tokens and drops from just after them; images come first in a message
    items: list[tuple[str, int]] = []
    for m in kept:
        items += [("image", image_tokens)] * len(m.get("images") or [])
        items.append(("text", MESSAGE_OVERHEAD + text_tokens(str(m.get("content") or ""))))
    excess = total - num_ctx
    for i, (kind, tokens) in enumerate(items):
        if excess <= 0:
            break
        cut = min(tokens, excess + (NUM_KEEP if i == 0 else 0))
        if kind == "image" and cut > 0:
            images -= 1  # an image is never half-kept
            cut = tokens
        excess -= cut
    return Fitted(num_ctx, tuple(kept), len(messages) - len(kept), num_ctx, True, images)


# -- format -----------------------------------------------------------------------------------------


def enforced_schema(schema: Any) -> Any:
    """The part of ``schema`` that llama-server's grammar enforces (module doc), as a JSON Schema."""
    if isinstance(schema, list):
        return [enforced_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: enforced_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
            out[key] = enforced_schema(value)
        elif key in _ENFORCED or (key in _INTEGER_BOUNDS and schema.get("type") == "integer"):
            out[key] = copy.deepcopy(value)
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False  # llama.cpp's default
    return out


def _schema_problem(schema: dict[str, Any]) -> str:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return exc.message
    return ""


def format_problem(fmt: Any, content: str, done_reason: str) -> str:
    """Why a model decoding under ``fmt`` could not have written ``content`` ('' when it could)."""
    if fmt in (None, "") or done_reason == "length":
        return ""
    try:
        doc = json.loads(content)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg})"
    if fmt == "json":
        return ""
    errors = list(Draft202012Validator(enforced_schema(fmt)).iter_errors(doc))
    return "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in errors[:3])


# -- load -------------------------------------------------------------------------------------------


class LoadFailed(Exception):
    """A load that did not finish: ``status`` and ``message`` are what Ollama answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ModelState:
    """One pulled model's runner: unloaded, loading (by one request) or loaded until a time."""

    def __init__(self, name: str, capabilities: list[str], digest: str, num_ctx: int | None = None,
                 context_length: int = 32_768) -> None:
        self.name = name
        self.capabilities = capabilities
        self.digest = digest
        self.num_ctx = num_ctx
        """The Modelfile's ``PARAMETER num_ctx`` (None: not set)."""
        self.context_length = context_length
        """The trained context length (``model_info["llama.context_length"]``)."""
        self.loaded_until: float | None = None  # monotonic; None: not loaded; inf: for ever
        self.loading = False
        self.loads = 0
        self.aborted_loads = 0
        self._cond = threading.Condition()

    def is_loaded(self, now: float) -> bool:
        with self._cond:
            if self.loaded_until is not None and self.loaded_until <= now:
                self.loaded_until = None  # keep_alive ran out: the runner is stopped
            return self.loaded_until is not None

    def listed(self, now: float) -> bool:
        """Shown by ``/api/ps``: loaded, or loading."""
        return self.loading or self.is_loaded(now)

    def touch(self, keep_alive: Any) -> None:
        """The end of a request: keep the runner for ``keep_alive`` from now (0: unload)."""
        seconds = keep_alive_s(keep_alive)
        with self._cond:
            if self.loaded_until is None and not self.loading:
                return  # unloaded meanwhile (a restart)
            self.loaded_until = None if seconds == 0 else (
                math.inf if seconds < 0 else time.monotonic() + seconds)

    def unload(self) -> None:
        with self._cond:
            self.loaded_until = None
            self._cond.notify_all()

    def ensure_loaded(self, load_s: float, fail: str, gone: Callable[[], bool],
                      sleep: Callable[[float], bool]) -> float:
        """Load the model unless it is loaded; return the seconds this request spent loading.

        ``gone()`` says whether this request's client has left; ``sleep(s)`` sleeps and returns True if it
        left meanwhile. Raises LoadFailed (500 ``fail`` when set; 499 "request canceled" when the client
        left, which aborts a load this request started)."""
        start = time.monotonic()
        waited = False
        with self._cond:
            while self.loading:  # another request's load: wait for it
                waited = True
                self._cond.wait(0.02)
                if gone():
                    raise LoadFailed(499, "request canceled")
            if self.loaded_until is not None and self.loaded_until > time.monotonic():
                return time.monotonic() - start if waited else 0.0  # Ollama's load_duration counts the wait
            self.loading, self.loaded_until = True, None
        left = sleep(load_s) if load_s > 0 else gone()
        with self._cond:
            self.loading = False
            self._cond.notify_all()
            if left:
                self.aborted_loads += 1
                raise LoadFailed(499, "request canceled")
            if fail:
                raise LoadFailed(500, fail)
            self.loads += 1
            self.loaded_until = math.inf  # until touch() sets the request's keep_alive
        return time.monotonic() - start
