"""Signed fleet messages: HMAC-SHA256 with a key shared by the operator and the boxes.

A message is a JSON object; its ``sig`` is the hex HMAC-SHA256 of the object without ``sig``, serialised with
sorted keys and no spaces. The key is the first line of a credential file (at least 32 bytes of text, e.g.
``openssl rand -hex 32 > fleet.key``; mode 0600, owned by the agent's user). Standard library only: the camera
box gains no dependency. (An Ed25519 pair, where the boxes hold only the public key, needs ``cryptography``,
which the core install does not carry.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pathlib
from typing import Any

from agent.errors import EdgeAgentError

__all__ = ["MIN_KEY_BYTES", "SignatureError", "canonical", "read_key", "sign", "verify"]

MIN_KEY_BYTES = 32


class SignatureError(EdgeAgentError):
    """A message without a valid signature (another key, changed in transit, or not signed)."""


def read_key(path: pathlib.Path) -> bytes:
    """The shared key: the first line of ``path``; EdgeAgentError naming the file when it is unusable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeAgentError(f"secret file {path}: cannot read it ({exc}); expected a file whose first line is the "
                             "fleet key (e.g. `openssl rand -hex 32 > fleet.key`)") from None
    key = lines[0].strip().encode() if lines else b""
    if len(key) < MIN_KEY_BYTES:
        raise EdgeAgentError(f"secret file {path}: the key on its first line has {len(key)} bytes; expected at least "
                             f"{MIN_KEY_BYTES} (e.g. `openssl rand -hex 32 > fleet.key`)")
    return key


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in doc.items() if k != "sig"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode()


def sign(doc: dict[str, Any], key: bytes) -> dict[str, Any]:
    """``doc`` with its ``sig``."""
    return {**doc, "sig": hmac.new(key, canonical(doc), hashlib.sha256).hexdigest()}


def verify(doc: dict[str, Any], key: bytes) -> dict[str, Any]:
    """``doc`` when its ``sig`` matches; SignatureError otherwise."""
    sig = doc.get("sig")
    if not isinstance(sig, str):
        raise SignatureError("the message is not signed (no 'sig')")
    expected = hmac.new(key, canonical(doc), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sig, expected):
        raise SignatureError("the signature does not match (another fleet key, or the message was changed)")
    return doc
