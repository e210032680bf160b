"""A fake Ollama server that speaks Ollama's HTTP API (no model behind it).

Faithful to the parts of the API the gateway and its client use (see
``/work/shared/reference/api-facts.md`` section 1): ``POST /api/chat`` and
``/api/generate``, non-streaming and NDJSON-streaming (chunked,
``application/x-ndjson``), ``GET /api/tags``, ``POST /api/show``, ``GET /api/ps``,
``GET /api/version``; durations in nanoseconds and metric fields omitted when zero;
``{"error": ...}`` bodies with Ollama's status codes and messages: 400 for a bad
request, 404 for a model that is not pulled, 503 when more requests are pending than
``parallel + max_queue``, and, inside a 200 stream, an ``{"error": ...}`` line.
Requests are served ``parallel`` at a time, each after a delay; a client that closes
its connection while waiting is noticed and recorded (``disconnected``), as Ollama
cancels such a request. The model side (load, ``keep_alive``, context accounting,
runner errors, the ``format`` grammar) is :mod:`tests.fakes.ollama_runner`, whose
docstring says what each part copies from Ollama's source.

Test controls: ``delay_s``, or ``service_time`` (a callable drawing each answer's seconds, e.g.
:class:`tests.fakes.service_time.ServiceTime`, a 7B vision model's 1-10 s scaled down); ``load_s`` (a cold
load), ``load_failure``,
:meth:`FakeOllama.crash_runner`, :meth:`FakeOllama.restart`; ``default_num_ctx``
and ``image_tokens``; a script of replies (:meth:`FakeOllama.script`, a
:class:`Reply` or a plain string of message content each, consumed in order) or
``answer_fn`` (a callable from the request body to a reply); :meth:`FakeOllama.down`
/ :meth:`FakeOllama.up`; ``models`` (what is "pulled", :meth:`FakeOllama.pull` with
a Modelfile ``num_ctx`` and a trained ``context_length``); ``requests``, the record
of every request received (with what of each chat fit the context, ``fitted``), and
``unfaithful``, the scripted answers refused because no model under the request's
``format`` could have written them.

    with FakeOllama() as fake:
        client = ollama.Client(host=fake.url)
        fake.script('{"verdict": "pass", ...}')
        client.chat(model="llava:7b", messages=[...], stream=False)
        assert fake.chat_requests()[-1].body["options"]["temperature"] == 0.1
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tests.fakes.ollama_http import (
    Handler,
    Server,
    client_gone,
    details,
    full_name,
    now,
    rfc3339,
    sleep_unless_gone,
    write_ndjson,
)
from tests.fakes.ollama_runner import (
    DEFAULT_NUM_CTX,
    IMAGE_TOKENS,
    NO_VISION,
    RUNNER_TERMINATED,
    Fitted,
    LoadFailed,
    ModelState,
    check_request,
    fit_messages,
    format_problem,
    keep_alive_s,
)

__all__ = ["GARBAGE", "VALID_ANSWER", "FakeOllama", "RecordedRequest", "Reply"]

VALID_ANSWER: dict[str, Any] = {
    "verdict": "defect",
    "tags": [{"label": "scratch", "confidence": 0.83}, {"label": "metal part", "confidence": 0.97}],
    "defects": [{"type": "scratch", "location": "upper left of the part", "severity": "medium"}],
    "description": "A thin scratch runs across the upper left corner of the part.",
}
"""The default reply content (as JSON): valid under the gateway's answer schema."""

GARBAGE = "Sure! The part looks fine to me, no defects that I can see."
"""A reply content that is not JSON, as a model asked without ``format`` may answer (under a ``format`` the
fake refuses it: no model decoding under the grammar could write it)."""

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"  # two spaces, as Ollama


@dataclasses.dataclass
class Reply:
    """One scripted answer to ``/api/chat``."""

    content: str = dataclasses.field(default_factory=lambda: json.dumps(VALID_ANSWER))
    delay_s: float | None = None
    """Seconds before answering (None: the server's ``delay_s``)."""
    status: int = 200
    """Non-200: answer ``{"error": error}`` with this HTTP status instead."""
    error: str = ""
    """With status 200 and a streaming request: an ``{"error": ...}`` line after the first chunk."""
    done_reason: str = "stop"
    prompt_eval_count: int | None = None
    """None: the prompt's tokens after the context is applied (:func:`fit_messages`)."""
    eval_count: int = 48
    metrics: dict[str, int] | None = None
    """Replace the measured metrics (``total_duration`` ... in ns); zero values are still omitted."""


@dataclasses.dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    """The parsed JSON body (None when there was none or it was not JSON)."""
    status: int = 0
    """The HTTP status answered (0 while in progress, or when the client left first)."""
    disconnected: bool = False
    """The client closed the connection before the answer was sent."""
    fitted: Fitted | None = None
    """For a chat that reached the model: what of it fit the context (messages kept, images seen)."""
    client: tuple[str, int] | None = None
    """The client's address and port (which process sent it, for the fleet tests)."""


class FakeOllama:
    """An Ollama look-alike on a free loopback port; start with ``with`` or :meth:`start`."""

    def __init__(
        self,
        *,
        models: Iterable[str] | Mapping[str, list[str]] = ("llava:7b",),
        delay_s: float = 0.0,
        parallel: int = 1,
        max_queue: int = 512,
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = "0.14.0",
        answer_fn: Callable[[dict[str, Any]], Reply | str] | None = None,
        load_s: float = 0.0,
        default_num_ctx: int = DEFAULT_NUM_CTX,
        image_tokens: int = IMAGE_TOKENS,
        service_time: Callable[[], float] | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.service_time = service_time
        """Seconds before each chat answer, drawn per answer (None: ``delay_s``); a Reply's delay_s wins."""
        self.load_s = load_s
        """Seconds a cold load takes (the first request after start, restart or keep_alive expiry)."""
        self.load_failure: str | None = None
        """When set, every load fails with 500 and this message (e.g. :func:`out_of_memory`)."""
        self.default_num_ctx = default_num_ctx
        """``OLLAMA_CONTEXT_LENGTH``: the context when neither the request nor the Modelfile sets one."""
        self.image_tokens = image_tokens
        self.unfaithful: list[str] = []
        """Scripted answers refused because no model under the request's ``format`` could write them."""
        self._crashes = 0
        self.parallel = parallel
        self.max_queue = max_queue
        self.version = version
        self.answer_fn = answer_fn
        self.requests: list[RecordedRequest] = []
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._replies: collections.deque[Reply | str] = collections.deque()
        self._models: dict[str, ModelState] = {}
        caps = models if isinstance(models, Mapping) else {m: ["completion", "vision"] for m in models}
        for name, capabilities in caps.items():
            self.pull(name, capabilities)
        self._running = threading.Semaphore(parallel)
        self._pending = 0
        self._disconnect = threading.Condition(self._lock)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeOllama:
        self._server = Server((self._host, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-ollama:{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    down = stop
    """Stop listening and drop open connections: clients get "connection refused" (the port stays ours)."""

    def up(self) -> FakeOllama:
        """Listen again on the same port after :meth:`down`."""
        return self.start()

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL with an explicit port, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self._host}:{self._port}"

    # -- test controls --------------------------------------------------------------------------

    def script(self, *replies: Reply | str) -> None:
        """Queue chat replies, used in order before ``answer_fn`` or the default valid answer."""
        with self._lock:
            self._replies.extend(replies)

    def pull(self, name: str, capabilities: list[str] | None = None, *, num_ctx: int | None = None,
             context_length: int = 32_768) -> None:
        """Make ``name`` a pulled model (``capabilities`` default: completion and vision; ``num_ctx``: its
        Modelfile's ``PARAMETER num_ctx``; ``context_length``: the trained length)."""
        full = full_name(name)
        with self._lock:
            self._models[full] = ModelState(full, capabilities or ["completion", "vision"],
                                            hashlib.sha256(full.encode()).hexdigest(), num_ctx, context_length)

    def model(self, name: str) -> ModelState:
        """The state of a pulled model (loads, aborted_loads, is_loaded ...)."""
        with self._lock:
            return self._models[full_name(name)]

    def crash_runner(self, times: int = 1) -> None:
        """The next ``times`` completions find the runner dead: 500 "llama runner process has terminated"."""
        with self._lock:
            self._crashes = times

    def restart(self) -> None:
        """Stop and start again on the same port, every model unloaded (as after `systemctl restart ollama`)."""
        self.down()
        with self._lock:
            models = list(self._models.values())
        for m in models:
            m.unload()
        self.up()

    def remove(self, name: str) -> None:
        """Forget a model, as ``ollama rm`` does."""
        with self._lock:
            self._models.pop(full_name(name), None)

    def chat_requests(self) -> list[RecordedRequest]:
        """The chats that ask something (a chat with no messages is a load: :meth:`load_requests`)."""
        with self._lock:
            return [r for r in self.requests if r.path == "/api/chat" and not _is_load(r)]

    def load_requests(self) -> list[RecordedRequest]:
        """The preloads and unloads: chats with no messages, generates with no prompt."""
        with self._lock:
            return [r for r in self.requests if r.path in ("/api/chat", "/api/generate") and _is_load(r)]

    def wait_for_disconnect(self, timeout: float = 5.0) -> bool:
        """Wait until some chat request's client has closed its connection before the answer."""
        with self._disconnect:
            return self._disconnect.wait_for(lambda: any(r.disconnected for r in self.requests), timeout)

    # -- HTTP -----------------------------------------------------------------------------------

    def _dispatch(self, handler: Handler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body: Any = None
        body_error = ""
        if raw:
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                body_error = f"invalid character at offset {getattr(exc, 'pos', 0)}: {exc}"
        record = RecordedRequest(method=method, path=handler.path.split("?")[0],
                                 headers={k.lower(): v for k, v in handler.headers.items()}, raw=raw, body=body,
                                 client=handler.client_address[:2])
        with self._lock:
            self.requests.append(record)
        routes: dict[str, tuple[str, Callable[[Handler, RecordedRequest], None]]] = {
            "/api/chat": ("POST", self._chat), "/api/generate": ("POST", self._generate),
            "/api/tags": ("GET", self._tags), "/api/show": ("POST", self._show),
            "/api/ps": ("GET", self._ps), "/api/version": ("GET", self._version),
        }
        if record.path == "/" and method == "GET":
            return self._send_text(handler, record, 200, "Ollama is running")
        if record.path not in routes:
            return self._send_text(handler, record, 404, "404 page not found")
        wanted, route = routes[record.path]
        if method != wanted:
            return self._send_text(handler, record, 405, "405 method not allowed")
        if method == "POST":
            if not raw:
                return self._send_error(handler, record, 400, "missing request body")
            if body_error or not isinstance(body, dict):
                return self._send_error(handler, record, 400, body_error or "json: cannot unmarshal into a request")
        route(handler, record)

    def _chat(self, handler: Handler, record: RecordedRequest) -> None:
        body: dict[str, Any] = record.body
        problem = check_request(body)
        if problem:
            return self._send_error(handler, record, 400, problem)
        with self._lock:
            model = self._models.get(full_name(body["model"]))
        if model is None:
            return self._send_error(handler, record, 404, f'model "{body["model"]}" not found, try pulling it first')
        self._serve(handler, record, body, model, list(body.get("messages") or []))

    def _generate(self, handler: Handler, record: RecordedRequest) -> None:
        body: dict[str, Any] = record.body
        problem = check_request(body, messages_key="prompt")
        if problem:
            return self._send_error(handler, record, 400, problem)
        with self._lock:
            model = self._models.get(full_name(body["model"]))
        if model is None:
            return self._send_error(handler, record, 404, f"model '{body['model']}' not found")
        messages: list[dict[str, Any]] = []
        if body.get("prompt"):
            messages = [*([{"role": "system", "content": body["system"]}] if body.get("system") else []),
                        {"role": "user", "content": body["prompt"], "images": body.get("images") or []}]
        self._serve(handler, record, body, model, messages)

    def _serve(self, handler: Handler, record: RecordedRequest, body: dict[str, Any], model: ModelState,
               messages: list[dict[str, Any]]) -> None:
        if not messages and keep_alive_s(body.get("keep_alive", 300)) == 0:  # unload only
            model.unload()
            return self._send_json(handler, record, 200, self._doc(record, body, "", "unload", {}))
        with self._lock:
            if self._pending >= self.parallel + self.max_queue:
                busy = True
            else:
                busy, self._pending = False, self._pending + 1
        if busy:
            return self._send_error(handler, record, 503, BUSY_MESSAGE)
        try:
            self._run(handler, record, body, model, messages)
        finally:
            with self._lock:
                self._pending -= 1

    def _run(self, handler: Handler, record: RecordedRequest, body: dict[str, Any], model: ModelState,
             messages: list[dict[str, Any]]) -> None:
        start = time.monotonic_ns()
        sock = handler.connection
        while not self._running.acquire(timeout=0.02):  # queued behind `parallel` running requests
            if client_gone(sock):
                return self._mark_disconnected(record)
        try:
            try:
                load_s = model.ensure_loaded(self.load_s, self.load_failure or "", lambda: client_gone(sock),
                                             lambda s: sleep_unless_gone(sock, s))
            except LoadFailed as exc:
                if exc.status == 499:
                    return self._mark_disconnected(record)
                return self._send_error(handler, record, exc.status, exc.message)
            if not messages:  # a preload: the model is loaded, nothing to answer
                model.touch(body.get("keep_alive"))
                return self._send_json(handler, record, 200, self._doc(record, body, "", "load", {}))
            self._complete(handler, record, body, model, messages, start, load_s)
        finally:
            self._running.release()

    def _complete(self, handler: Handler, record: RecordedRequest, body: dict[str, Any], model: ModelState,
                  messages: list[dict[str, Any]], start: int, load_s: float) -> None:
        fitted = fit_messages(messages, self._num_ctx(body, model), truncate=body.get("truncate", True) is not False,
                              image_tokens=self.image_tokens)
        if isinstance(fitted, str):
            return self._send_error(handler, record, 400, fitted)
        record.fitted = fitted
        if fitted.images_seen and "vision" not in model.capabilities:
            return self._send_error(handler, record, 500, NO_VISION)  # the runner has no projector
        if self._take_crash():
            model.unload()
            return self._send_error(handler, record, 500, RUNNER_TERMINATED)
        reply = self._next_reply(body)
        delay = reply.delay_s if reply.delay_s is not None else (
            self.service_time() if self.service_time is not None else self.delay_s)
        if sleep_unless_gone(handler.connection, delay):
            return self._mark_disconnected(record)
        if reply.status != 200:
            if "runner process has terminated" in reply.error:
                model.unload()
            return self._send_error(handler, record, reply.status, reply.error or "unexpected error")
        problem = format_problem(body.get("format"), reply.content, reply.done_reason)
        if problem:
            with self._lock:
                self.unfaithful.append(problem)
            return self._send_error(handler, record, 500, "fake ollama: a model decoding under this format "
                                    f"could not have written the scripted answer: {problem}")
        model.touch(body.get("keep_alive"))
        total = max(time.monotonic_ns() - start, 1)
        metrics = {"total_duration": total, "load_duration": int(load_s * 1e9),
                   "prompt_eval_count": fitted.prompt_tokens if reply.prompt_eval_count is None
                   else reply.prompt_eval_count, "prompt_eval_duration": total * 3 // 10,
                   "eval_count": reply.eval_count, "eval_duration": total * 5 // 10}
        if reply.metrics is not None:
            metrics = dict(reply.metrics)
        metrics = {k: v for k, v in metrics.items() if v}  # Go's omitempty
        if body.get("stream", True):
            self._stream(handler, record, body["model"], reply, metrics)
        else:
            self._send_json(handler, record, 200, self._doc(record, body, reply.content, reply.done_reason, metrics))

    def _doc(self, record: RecordedRequest, body: dict[str, Any], content: str, done_reason: str,
             metrics: dict[str, int]) -> dict[str, Any]:
        doc: dict[str, Any] = {"model": body["model"], "created_at": now()}
        if record.path == "/api/generate":
            doc["response"] = content
        else:
            doc["message"] = {"role": "assistant", "content": content}
        return {**doc, "done_reason": done_reason, "done": True, **metrics}

    def _num_ctx(self, body: dict[str, Any], model: ModelState) -> int:
        options = body.get("options") or {}
        wanted = options.get("num_ctx") or model.num_ctx or self.default_num_ctx
        return min(int(wanted), model.context_length)

    def _take_crash(self) -> bool:
        with self._lock:
            if self._crashes <= 0:
                return False
            self._crashes -= 1
            return True

    def _stream(self, handler: Handler, record: RecordedRequest, model: str, reply: Reply,
                metrics: dict[str, int]) -> None:
        text = reply.content
        step = max(1, len(text) // 4)
        pieces = [text[i:i + step] for i in range(0, len(text), step)] or [""]
        lines: list[dict[str, Any]] = []
        for i, piece in enumerate(pieces):
            lines.append({"model": model, "created_at": now(), "message": {"role": "assistant", "content": piece},
                          "done": False})
            if reply.error and i == 0:
                lines.append({"error": reply.error})
                break
        else:
            lines.append({"model": model, "created_at": now(), "message": {"role": "assistant", "content": ""},
                          "done_reason": reply.done_reason, "done": True, **metrics})
        if not write_ndjson(handler, lines):
            return self._mark_disconnected(record)
        record.status = 200

    def _tags(self, handler: Handler, record: RecordedRequest) -> None:
        with self._lock:
            models = [self._describe(m) for m in self._models.values()]
        self._send_json(handler, record, 200, {"models": models})

    def _show(self, handler: Handler, record: RecordedRequest) -> None:
        name = record.body.get("model") or record.body.get("name") or ""
        if not name:
            return self._send_error(handler, record, 400, "model is required")
        with self._lock:
            model = self._models.get(full_name(name))
        if model is None:
            return self._send_error(handler, record, 404, f"model '{name}' not found")
        vision = "vision" in model.capabilities
        parameters = "temperature                    0.1" + (
            f"\nnum_ctx                        {model.num_ctx}" if model.num_ctx else "")
        doc = {
            "license": "Apache License 2.0 (fake)",
            "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM {model.name}\nPARAMETER temperature 0.1\n",
            "parameters": parameters,
            "template": "{{ .System }}\nUSER: {{ .Prompt }}\nASSISTANT: ",
            "details": details(),
            "model_info": {"general.architecture": "llama", "general.parameter_count": 6_738_415_616,
                           "llama.context_length": model.context_length},
            **({"projector_info": {"clip.has_vision_encoder": True, "clip.vision.image_size": 336,
                                   "clip.vision.patch_size": 14}} if vision else {}),
            "capabilities": model.capabilities,
            "modified_at": "2026-11-01T10:00:00.000000000Z",
        }
        self._send_json(handler, record, 200, doc)

    def _ps(self, handler: Handler, record: RecordedRequest) -> None:
        now = time.monotonic()
        with self._lock:
            listed = [m for m in self._models.values() if m.listed(now)]
        models = []
        for m in listed:
            # a loading model has no expiry yet: Ollama shows now + the session duration (5m here)
            until = m.loaded_until if m.loaded_until is not None else now + 300.0
            expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=until - now)
                       if until != float("inf") else datetime.datetime(2318, 1, 1, tzinfo=datetime.timezone.utc))
            models.append({**self._describe(m), "expires_at": rfc3339(expires), "size_vram": 5_600_000_000,
                           "context_length": min(m.num_ctx or self.default_num_ctx, m.context_length)})
            del models[-1]["modified_at"]
        self._send_json(handler, record, 200, {"models": models})

    def _version(self, handler: Handler, record: RecordedRequest) -> None:
        self._send_json(handler, record, 200, {"version": self.version})

    # -- helpers --------------------------------------------------------------------------------

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            scripted = self._replies.popleft() if self._replies else None
        if scripted is None and self.answer_fn is not None:
            scripted = self.answer_fn(body)
        if scripted is None:
            return Reply()
        return Reply(content=scripted) if isinstance(scripted, str) else scripted

    def _describe(self, model: ModelState) -> dict[str, Any]:
        return {"name": model.name, "model": model.name, "modified_at": "2026-11-01T10:00:00.000000000Z",
                "size": 4_733_363_377, "digest": model.digest, "details": details()}

    def _mark_disconnected(self, record: RecordedRequest) -> None:
        with self._disconnect:
            record.disconnected = True
            self._disconnect.notify_all()

    def _send_json(self, handler: Handler, record: RecordedRequest, status: int, doc: Any) -> None:
        self._send(handler, record, status, json.dumps(doc).encode(), "application/json; charset=utf-8")

    def _send_error(self, handler: Handler, record: RecordedRequest, status: int, message: str) -> None:
        self._send_json(handler, record, status, {"error": message})

    def _send_text(self, handler: Handler, record: RecordedRequest, status: int, text: str) -> None:
        self._send(handler, record, status, text.encode(), "text/plain; charset=utf-8")

    def _send(self, handler: Handler, record: RecordedRequest, status: int, data: bytes, content_type: str) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            handler.wfile.flush()
        except OSError:
            return self._mark_disconnected(record)
        record.status = status


def _is_load(record: RecordedRequest) -> bool:
    body = record.body if isinstance(record.body, dict) else {}
    return not body.get("prompt" if record.path == "/api/generate" else "messages")


if __name__ == "__main__":  # python -m tests.fakes.ollama: see tests.fakes.ollama_cli
    from tests.fakes.ollama_cli import main

    raise SystemExit(main())
