"""Who is calling the gateway: bearer tokens from a file, or the client certificate of mutual TLS.

The tokens file (``auth.tokens_file``) has one client a line, ``NAME:TOKEN``::

    # edge-agent gateway tokens (chmod 600)
    line-3-box-1:Zq3k0m6...   (at least 24 characters)

A caller sends ``authorization: Bearer TOKEN`` as call metadata (the agent does,
from ``escalation.token_file``). :class:`TokenTable` keeps only the SHA-256 of
each token and compares every one in constant time, so neither the file's text
nor a timing difference tells a caller which token is near. The client's name
is what logs and metrics show, never the token.

With mutual TLS the TLS handshake already refuses a client without a certificate
signed by ``tls.client_ca_file``; the client's name is the certificate's common
name (:func:`certificate_name`).
"""

from __future__ import annotations

import hashlib
import hmac
import pathlib
import re
import stat
from collections.abc import Sequence
from typing import Any

from agent.errors import GatewayError

__all__ = ["ANONYMOUS", "TokenTable", "bearer_token", "certificate_name"]

ANONYMOUS = "anonymous"
MIN_TOKEN_CHARS = 24
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: what fits an HTTP/2 header value


class TokenTable:
    """Client names by the SHA-256 of their tokens. :meth:`from_file` reads ``auth.tokens_file``."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._digests = [(hashlib.sha256(token.encode("ascii")).digest(), name) for name, token in tokens.items()]
        self.names = tuple(tokens)

    @classmethod
    def from_file(cls, path: pathlib.Path) -> TokenTable:
        """Read and check the file; GatewayError naming the line and what was expected."""
        field = "auth.tokens_file"
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise GatewayError(f"{field}: cannot read {path} ({why}); expected a file of NAME:TOKEN lines") from exc
        if mode & stat.S_IROTH:
            raise GatewayError(f"{field}: {path} is readable by every user (mode {stat.S_IMODE(mode):04o}); "
                               f"run `chmod 600 {path}` (or give it through systemd's LoadCredential=)")
        tokens: dict[str, str] = {}
        seen: set[str] = set()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
            if not line:
                continue
            name, sep, token = (part.strip() for part in line.partition(":"))
            where = f"{field}: {path} line {number}"
            if not sep or not _NAME.match(name):
                raise GatewayError(f"{where}: expected NAME:TOKEN with NAME of letters, digits, '.', '_' or '-' "
                                   "(at most 64)")
            if len(token) < MIN_TOKEN_CHARS or not _TOKEN.match(token):
                raise GatewayError(f"{where}: the token of {name!r} is {len(token)} characters or has spaces; "
                                   f"expected at least {MIN_TOKEN_CHARS} printable characters (e.g. "
                                   "`openssl rand -base64 32`)")
            if name in tokens:
                raise GatewayError(f"{where}: client {name!r} is listed twice; expected one line per client")
            if token in seen:
                raise GatewayError(f"{where}: the token of {name!r} is also another client's; expected one "
                                   "token per client")
            tokens[name] = token
            seen.add(token)
        if not tokens:
            raise GatewayError(f"{field}: {path} lists no client; expected at least one NAME:TOKEN line")
        return cls(tokens)

    def identify(self, token: str) -> str | None:
        """The name of the client whose token this is, or None. Constant time over the table."""
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found: str | None = None
        for known, name in self._digests:
            if hmac.compare_digest(known, digest):
                found = name
        return found


def bearer_token(metadata: Sequence[Any] | None) -> str | None:
    """The token of an ``authorization: Bearer TOKEN`` entry in call metadata, or None."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def certificate_name(auth_context: dict[str, list[bytes]]) -> str | None:
    """The client certificate's common name from a gRPC auth context (mutual TLS), or None."""
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        values = auth_context.get(key) or []
        if values:
            return values[0].decode("utf-8", "replace")[:64]
    return None
