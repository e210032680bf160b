"""Who may connect to the agent's OPC UA server: the users file (``opcua_server.users_file``), one user a line,
``USER:PASSWORD``::

    # edge-agent OPC UA users (chmod 600)
    scada:Zq3k0m6...   (at least 12 characters)

:class:`UserTable` keeps only the SHA-256 of each password and compares in constant time. Every user reads; no
client writes (the variables are read-only).
"""

from __future__ import annotations

import hashlib
import hmac
import pathlib
import re
import stat

from agent.errors import OpcUaServerError

__all__ = ["MIN_PASSWORD_CHARS", "UserTable"]

MIN_PASSWORD_CHARS = 12
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_FIELD = "opcua_server.users_file"


class UserTable:
    """User names and the SHA-256 of their passwords. :meth:`from_file` reads ``opcua_server.users_file``."""

    def __init__(self, users: dict[str, str]) -> None:
        self._digests = {name: _digest(password) for name, password in users.items()}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._digests)

    @classmethod
    def from_file(cls, path: pathlib.Path) -> UserTable:
        """Read and check the file; OpcUaServerError naming the line and what was expected."""
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise OpcUaServerError(f"{_FIELD}: cannot read {path} ({why}); expected a file of USER:PASSWORD "
                                   "lines") from exc
        if mode & stat.S_IROTH:
            raise OpcUaServerError(f"{_FIELD}: {path} is readable by every user (mode {stat.S_IMODE(mode):04o}); "
                                   f"run `chmod 600 {path}`")
        users: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = "" if raw.lstrip().startswith("#") else raw.strip()
            if not line:
                continue
            name, sep, password = line.partition(":")
            where = f"{_FIELD}: {path} line {number}"
            if not sep or not _NAME.match(name):
                raise OpcUaServerError(f"{where}: expected USER:PASSWORD with USER of letters, digits, '.', '_', "
                                       "'@' or '-' (at most 64)")
            if len(password) < MIN_PASSWORD_CHARS:
                raise OpcUaServerError(f"{where}: the password of {name!r} is {len(password)} characters; expected "
                                       f"at least {MIN_PASSWORD_CHARS} (e.g. `openssl rand -base64 18`)")
            if name in users:
                raise OpcUaServerError(f"{where}: user {name!r} is listed twice; expected one line per user")
            users[name] = password
        if not users:
            raise OpcUaServerError(f"{_FIELD}: {path} lists no user; expected at least one USER:PASSWORD line")
        return cls(users)

    def check(self, name: str | None, password: str | None) -> bool:
        """True when ``password`` is ``name``'s. Constant time in the password."""
        known = self._digests.get(name or "")
        match = hmac.compare_digest(known if known is not None else _UNKNOWN, _digest(password or ""))
        return known is not None and match


def _digest(password: str) -> bytes:
    return hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest()


_UNKNOWN = _digest("\0 no such user")  # compared against, so an unknown name takes as long as a known one
