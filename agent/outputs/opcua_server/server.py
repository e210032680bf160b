"""The agent's OPC UA server (asyncua) in its own thread and asyncio loop; what it serves is
:mod:`agent.outputs.opcua_server.nodemap`'s.

The live path is threads, asyncua is asyncio, so they meet in one place, written down here:

* :meth:`OpcUaServer.on_published` (an event fan-out listener, on the inference or the escalation thread) counts
  the event (:class:`~agent.outputs.opcua_server.nodemap.Tally`, a lock held for a few dict updates), puts the
  camera's new values into a mailbox of one entry per camera (the **latest value wins**: values not yet written
  are replaced, never queued), and wakes the server's loop only when it is not already awake. It never waits for
  the server, for a client or for the network: a slow or stuck OPC UA client cannot slow the inference loop, it
  only sees fewer intermediate values (the counters are cumulative, so none is lost from them).
* The server's loop writes the mailbox into the address space (at most one pass per 50 ms), and every
  ``refresh_s`` reads an ops snapshot (the callable the runtime hands in; on a worker thread, it may wait on the
  outbox's lock) for the device and health nodes, and for the set of cameras: a camera added by a reload
  appears, a removed one disappears.

Start-up is synchronous: :meth:`OpcUaServer.start` returns once the server listens, or raises
:class:`~agent.errors.OpcUaServerError` saying why (port in use, a certificate or key that does not load).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager

from agent.config.opcua_server import OpcUaServerConfig
from agent.core.ports import Published
from agent.core.version import agent_version
from agent.errors import OpcUaServerError
from agent.ops.snapshot import AgentSnapshot
from agent.outputs.opcua_server import nodemap
from agent.outputs.opcua_server.users import UserTable

__all__ = ["OpcUaServer"]

log = logging.getLogger(__name__)

_TYPES = {"String": ua.VariantType.String, "UInt64": ua.VariantType.UInt64, "DateTime": ua.VariantType.DateTime,
          "Boolean": ua.VariantType.Boolean}
_POLICIES = {"None": ua.SecurityPolicyType.NoSecurity,
             "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
             "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt}
_PASS_GAP_S = 0.05
"""The least time between two write passes: a burst of events costs one pass per 50 ms (the latest values), not one
per event; a client's usual publishing interval (100 ms and more) sees no difference."""
_CAMERA = nodemap.specs_by_path(nodemap.CAMERA_NODES)
_DEVICE = nodemap.specs_by_path(nodemap.DEVICE_NODES)


class _ToAgentLog(logging.Handler):
    """asyncua's own records (a refused client, a session that timed out: warnings and up) go on through the agent's
    logger tree (``agent.outputs.opcua_server.asyncua``), so they come out structured like the agent's, whatever
    handlers the agent has when they happen."""

    target = logging.getLogger(__name__ + ".asyncua")

    def emit(self, record: logging.LogRecord) -> None:
        if not self.target.disabled:
            self.target.handle(record)


def _route_asyncua_logs() -> None:
    lib = logging.getLogger("asyncua")
    if not any(isinstance(h, _ToAgentLog) for h in lib.handlers):
        lib.addHandler(_ToAgentLog(logging.WARNING))
        lib.propagate = False
        if lib.level == logging.NOTSET:
            lib.setLevel(logging.WARNING)  # its info lines are one per request


class _Users(UserManager):
    """asyncua's user manager over the users file: a known user with the right password reads, nobody else
    connects (and no one is an admin, so no client writes)."""

    def __init__(self, table: UserTable) -> None:
        self.table = table

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if not self.table.check(username, password):
            log.warning("OPC UA client refused: wrong user name or password for %r", username,
                        extra={"opcua_user": username or ""})
            return None
        return User(role=UserRole.User, name=username)


class OpcUaServer:
    """The server, its thread and the hand-off from the live path (see the module's docstring)."""

    def __init__(self, config: OpcUaServerConfig, snapshot: Callable[[], AgentSnapshot],
                 cameras: Sequence[str]) -> None:
        self.config = config
        self._snapshot = snapshot
        self._users = UserTable.from_file(config.users_file) if config.users_file is not None else None
        self.tally = nodemap.Tally()
        self._lock = threading.Lock()
        self._mailbox: dict[str, dict[str, Any]] = {}  # camera -> values not yet written (the latest win)
        self._awake = False  # a wake-up is scheduled and the mailbox not yet taken
        self._cameras = list(cameras)  # at start; then the snapshot's
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._space: _AddressSpace | None = None
        self.state = "new"  # new, serving, stopped, failed: <why>
        self.writes = 0  # address-space write passes (one per wake-up, however many events it carried)

    @property
    def endpoint(self) -> str:
        return self.config.endpoint

    def written(self, camera: str, path: str) -> Any:
        """The value of a camera's variable in the address space now (None: no such camera or variable)."""
        space = self._space
        return None if space is None else space.written.get(camera, {}).get(path)

    # -- the live path's side ----------------------------------------------------------------------------

    def on_published(self, published: Published) -> None:
        """The fan-out listener: count, leave the latest values in the mailbox, wake the loop if asleep."""
        values = self.tally.record(published)
        with self._lock:
            self._mailbox.setdefault(published.event.camera, {}).update(values)
            if self._awake or self._loop is None or self._wake is None:
                return
            self._awake = True
        with contextlib.suppress(RuntimeError):  # the loop closed (stopping): the values have nowhere to go
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- start and stop ------------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Listen; OpcUaServerError when it cannot (its port in use, a certificate that does not load)."""
        _route_asyncua_logs()
        self._thread = threading.Thread(target=self._run, name="opcua-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise OpcUaServerError(f"opcua_server: {self.endpoint} did not start within {timeout:g} s")
        if self._error is not None:
            raise _translate(self._error, self.config) from self._error
        log.info("OPC UA server listening on %s (%s; %s)", self.endpoint, ", ".join(self.config.security.policies),
                 "users from " + str(self.config.users_file) if self._users is not None else "anonymous clients",
                 extra={"opcua_endpoint": self.endpoint})

    def stop(self, timeout: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: it has stopped
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the OPC UA server did not stop within %.0f s", timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001  reported by start() (before ready) or logged (after)
            self._error = exc
            if self._ready.is_set():
                self.state = f"failed: {exc!r}"
                log.exception("the OPC UA server stopped with an error; the agent goes on without it")
        finally:
            self._ready.set()
            if not self.state.startswith("failed"):
                self.state = "stopped"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()
        stop = self._stop = asyncio.Event()
        space = self._space = _AddressSpace(self.config, self._users)
        await space.open(self._cameras)
        try:
            self.state = "serving"
            self._ready.set()
            tasks = [asyncio.create_task(self._writer(space, wake)), asyncio.create_task(self._refresher(space)),
                     asyncio.create_task(stop.wait())]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                task.result()  # a writer or refresher that failed: _run logs it, the server stops
        finally:
            await space.close()

    # -- the server's loop ---------------------------------------------------------------------------------

    async def _writer(self, space: _AddressSpace, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            with self._lock:
                mailbox, self._mailbox = self._mailbox, {}
                self._awake = False
            await space.write_cameras(mailbox)
            self.writes += 1
            await asyncio.sleep(_PASS_GAP_S)  # events meanwhile wait in the mailbox: one pass carries them all

    async def _refresher(self, space: _AddressSpace) -> None:
        version = agent_version()
        while True:
            snapshot = await asyncio.to_thread(self._snapshot)
            health = nodemap.camera_health(snapshot)
            await space.sync_cameras(list(health), self.tally)
            await space.write_cameras(health)
            await space.write_device(nodemap.device_values(snapshot, version))
            await asyncio.sleep(self.config.refresh_s)


class _AddressSpace:
    """The asyncua server and the nodes it serves: created, written, deleted (on the server's loop only)."""

    def __init__(self, config: OpcUaServerConfig, users: UserTable | None) -> None:
        self.config = config
        self.server = Server(user_manager=_Users(users) if users is not None else None)
        self.users = users
        self.ns = 0
        self.cameras: dict[str, Node] = {}
        self.root: Node | None = None
        self.written: dict[str, dict[str, Any]] = {}  # camera -> values in the address space

    async def open(self, cameras: Sequence[str]) -> None:
        server, config = self.server, self.config
        await server.init()
        server.set_endpoint(config.endpoint)  # what clients are told to dial (endpoint_host)
        server.socket_address = (config.host, config.port)  # what it binds
        server.set_server_name(f"edge-agent {agent_version()}")
        await server.set_application_uri(config.namespace_uri)
        server.allow_remote_admin(False)
        server.set_security_policy([_POLICIES[p] for p in config.security.policies])
        server.set_identity_tokens([ua.UserNameIdentityToken] if self.users is not None
                                   else [ua.AnonymousIdentityToken])
        if config.security.cert_file is not None and config.security.key_file is not None:
            await server.load_certificate(str(config.security.cert_file))
            await server.load_private_key(str(config.security.key_file))
        self.ns = await server.register_namespace(config.namespace_uri)
        objects = server.nodes.objects
        self.root = await objects.add_folder(self.node_id("EdgeAgent"), ua.QualifiedName("EdgeAgent", self.ns))
        device = await self._folder(self.root, nodemap.device_node_id(), "Device")
        for spec in nodemap.DEVICE_NODES:
            await self._variable(device, nodemap.device_node_id(spec.path), spec)
        await self._folder(self.root, "Cameras", "Cameras")
        for camera in cameras:
            await self.add_camera(camera, {})
        _check_bindable(config.host, config.port)  # a clear error, before asyncua logs its traceback for it
        await server.start()

    def node_id(self, text: str) -> ua.NodeId:
        return ua.NodeId(ua.String(text), ua.Int16(self.ns))

    async def close(self) -> None:
        await self.server.stop()

    async def _folder(self, parent: Node, node_id: str, name: str) -> Node:
        return await parent.add_folder(self.node_id(node_id), ua.QualifiedName(name, self.ns))

    async def _variable(self, parent: Node, node_id: str, spec: nodemap.NodeSpec, value: Any = None) -> Node:
        name = spec.path.rsplit("/", 1)[-1]
        return await parent.add_variable(self.node_id(node_id), ua.QualifiedName(name, self.ns),
                                         ua.Variant(spec.default if value is None else value, _TYPES[spec.type]))

    async def add_camera(self, camera: str, values: dict[str, Any]) -> None:
        """The camera's folder and variables, with ``values`` where known (a camera added after its first event)."""
        cameras = self.server.get_node(self.node_id("Cameras"))
        folder = await self._folder(cameras, nodemap.camera_node_id(camera), camera)
        subfolders = {"": folder}
        for spec in nodemap.CAMERA_NODES:
            sub, _, _ = spec.path.rpartition("/")
            if sub not in subfolders:
                subfolders[sub] = await self._folder(folder, nodemap.camera_node_id(camera, sub), sub)
            node_id = nodemap.camera_node_id(camera, spec.path)
            await self._variable(subfolders[sub], node_id, spec, values.get(spec.path))
        self.cameras[camera] = folder
        self.written[camera] = nodemap.camera_defaults() | values

    async def sync_cameras(self, running: list[str], tally: nodemap.Tally) -> None:
        """Add the cameras that run now and are not served, delete the served ones that no longer run."""
        for camera in [c for c in self.cameras if c not in running]:
            await self.server.delete_nodes([self.cameras.pop(camera)], recursive=True)
            self.written.pop(camera, None)
            log.info("OPC UA: camera %s removed from the address space", camera, extra={"camera": camera})
        for camera in running:
            if camera not in self.cameras:
                await self.add_camera(camera, {f"Counters/{k}": v for k, v in tally.counts(camera).items()})
                log.info("OPC UA: camera %s added to the address space", camera, extra={"camera": camera})

    async def write_cameras(self, values: dict[str, dict[str, Any]]) -> None:
        """Write each served camera's changed values (a camera not served yet, or gone, is skipped: its counters
        are the tally's and reach the address space when the camera is added)."""
        for camera, new in values.items():
            written = self.written.get(camera)
            if written is None:
                continue
            for path, value in nodemap.changed(written, new).items():
                await self._write(nodemap.camera_node_id(camera, path), _CAMERA[path], value)
                written[path] = value

    async def write_device(self, values: dict[str, Any]) -> None:
        for path, value in values.items():
            await self._write(nodemap.device_node_id(path), _DEVICE[path], value)

    async def _write(self, node_id: str, spec: nodemap.NodeSpec, value: Any) -> None:
        await self.server.write_attribute_value(self.node_id(node_id),
                                                ua.DataValue(ua.Variant(value, _TYPES[spec.type])))


def _check_bindable(host: str, port: int) -> None:
    """OSError when ``host:port`` cannot be bound now (in use, not an address of this host), as asyncio's server
    would find (SO_REUSEADDR, as it sets)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host.strip("[]"), port))


def _translate(exc: BaseException, config: OpcUaServerConfig) -> OpcUaServerError:
    """A start-up failure as an error that says what to do."""
    where = f"opcua_server: {config.host}:{config.port}"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return OpcUaServerError(f"{where} is already in use (another OPC UA server, or an agent already running); "
                                "stop that program or set opcua_server.port to a free port")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL:
        return OpcUaServerError(f"{where}: {config.host} is not an address of this host; set opcua_server.host to "
                                "one of its addresses, 0.0.0.0 or 127.0.0.1")
    if isinstance(exc, OpcUaServerError):
        return exc
    return OpcUaServerError(f"{where}: cannot start the OPC UA server: {type(exc).__name__}: {exc} (check "
                            "opcua_server.security.cert_file and key_file)")
