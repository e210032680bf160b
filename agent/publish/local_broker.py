"""A private Mosquitto broker on loopback, for the demo and the tests.

``LocalMosquitto`` runs ``mosquitto -c CONFIG`` in the foreground as a child
process, on a free port of 127.0.0.1 (or the one given), with a config file
written into its own temporary directory::

    with LocalMosquitto() as broker:
        publisher = MqttPublisher(MqttConfig(url=broker.url), "dev1")

Mosquitto 2 facts this relies on (checked on 2.0.11):

* once a ``listener`` is configured, anonymous clients are refused unless
  ``allow_anonymous true`` is set;
* started as root, it drops privileges to user ``mosquitto`` right after reading
  the config, and then cannot open a log file in a root-owned temp dir; so as
  root the config says ``user root`` (no drop: it is a throwaway broker);
* its log goes to stderr, which is redirected to ``mosquitto.log`` in the temp
  dir (so start-up errors that happen before any ``log_dest`` is open land
  there too).

``restart()`` keeps the port, so clients reconnect to the same URL; with
``persistence=True`` retained messages and persistent sessions survive it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable
from types import TracebackType

from agent.errors import BrokerError

_FALLBACK_BINARY = "/usr/sbin/mosquitto"
_INSTALL_HINT = "mosquitto not found; install it with `apt-get install mosquitto`"


def _cleanup(procs: list[subprocess.Popen[bytes]], workdir: pathlib.Path) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    procs.clear()
    shutil.rmtree(workdir, ignore_errors=True)


def find_mosquitto() -> str:
    """Path of the mosquitto binary (PATH first, then /usr/sbin), or BrokerError."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access(_FALLBACK_BINARY, os.X_OK):
        return _FALLBACK_BINARY
    raise BrokerError(_INSTALL_HINT)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalMosquitto:
    """A Mosquitto child process on 127.0.0.1, for the demo and tests.

    ``extra_config`` lines are appended to the generated config (e.g.
    ``password_file``, ``cafile``/``certfile``/``keyfile``); they apply to the
    listener (``per_listener_settings`` is off). Files they name should live in
    :attr:`workdir` or be readable by the broker.
    """

    HOST = "127.0.0.1"

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_config: Iterable[str] = (),
        persistence: bool = False,
        binary: str | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        self._binary = binary or find_mosquitto()
        self._port = port if port is not None else free_port(self.HOST)
        self._extra = list(extra_config)
        self._persistence = persistence
        self._start_timeout_s = start_timeout_s
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="edge-agent-mosquitto-"))
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        # Whatever happens to this object (no close(), an exception, interpreter exit), the
        # child is killed and the directory removed, quietly.
        self._procs: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _cleanup, self._procs, self.workdir)
        self._write_config()

    # -- properties -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.HOST

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self.HOST}:{self._port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalMosquitto:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return self
        if self._proc is not None:  # exited on its own
            self._proc = None
        with open(self.log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    [self._binary, "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the broker
                )
            except OSError as exc:
                raise BrokerError(f"cannot run {self._binary}: {exc}") from exc
        self._procs[:] = [self._proc]
        deadline = time.monotonic() + self._start_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise BrokerError(
                    f"mosquitto exited with status {code} while starting on port {self._port}; "
                    f"its log ends with:\n{self.log_tail()}"
                )
            if self._accepts():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(
                    f"mosquitto did not accept connections on {self.HOST}:{self._port} within "
                    f"{self._start_timeout_s:g} s; its log ends with:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (mosquitto saves persistence and exits), then SIGKILL after ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, timeout: float = 5.0) -> LocalMosquitto:
        """Stop, then start again on the same port."""
        self.stop(timeout)
        return self.start()

    def close(self) -> None:
        """Stop the broker and remove its directory (done at exit anyway if forgotten)."""
        self.stop()
        self._finalizer()

    def __enter__(self) -> LocalMosquitto:
        try:
            return self.start()
        except BaseException:
            self._finalizer()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- logs -------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_text().rstrip("\n")
        return "\n".join(text.splitlines()[-lines:]) if text else "(empty log)"

    def wait_for_log(self, needle: str, timeout: float = 5.0) -> bool:
        """Wait until ``needle`` appears in the broker's log (e.g. a client id in a
        subscribe line); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            time.sleep(0.02)
        return needle in self.log_text()

    # -- internals --------------------------------------------------------------------------

    def _write_config(self) -> None:
        lines = [
            "# written by edge-agent's LocalMosquitto",
            f"listener {self._port} {self.HOST}",
            "allow_anonymous true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type subscribe",
            "log_type unsubscribe",
            "connection_messages true",
            "log_timestamp true",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root, mosquitto would switch to user 'mosquitto' and lose access to workdir.
            lines.append("user root")
        if self._persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 0"]
        else:
            lines.append("persistence false")
        lines += self._extra
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.HOST, self._port), timeout=0.2):
                return True
        except OSError:
            return False
