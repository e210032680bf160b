"""Bring a rollout's model file onto the box from a plant-local source (a path on a share, or an http(s) URL
inside the plant) into a staging folder beside the model, hashing it on the way: a file whose sha256 is not the
one the signed command names is deleted and refused."""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import urllib.error
import urllib.parse
import urllib.request
from typing import BinaryIO

from agent.errors import EdgeAgentError

__all__ = ["MAX_MODEL_BYTES", "DigestMismatch", "fetch_model"]

MAX_MODEL_BYTES = 2 << 30  # 2 GiB: larger than any prefilter; a source that streams forever stops here
_CHUNK = 1 << 20


class DigestMismatch(EdgeAgentError):
    """The file at the source is not the model the command names."""


def _open(source: str, timeout_s: float) -> BinaryIO:
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ("http", "https"):
        try:
            return urllib.request.urlopen(source, timeout=timeout_s)  # type: ignore[no-any-return]  # noqa: S310
        except (OSError, ValueError) as exc:
            raise EdgeAgentError(f"cannot read the model from {source}: {exc}") from None
    path = pathlib.Path(source.removeprefix("file://"))
    try:
        return path.open("rb")
    except OSError as exc:
        raise EdgeAgentError(f"cannot read the model file {path}: {exc.strerror or exc}; expected a path this box "
                             "can read (a plant share) or an http(s) URL") from None


def fetch_model(source: str, sha256: str, staging: pathlib.Path, timeout_s: float = 60.0) -> pathlib.Path:
    """The model at ``source`` copied to ``staging/<sha256[:12]>.onnx`` once its digest is checked;
    DigestMismatch (nothing kept) when it is another file, EdgeAgentError when it cannot be read."""
    staging.mkdir(parents=True, exist_ok=True)
    final = staging / f"{sha256[:12]}.onnx"
    part = staging / f".{sha256[:12]}.part"
    h = hashlib.sha256()
    size = 0
    try:
        with _open(source, timeout_s) as src, part.open("wb") as dst:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                size += len(chunk)
                if size > MAX_MODEL_BYTES:
                    raise EdgeAgentError(f"the model at {source} is larger than {MAX_MODEL_BYTES >> 20} MiB; "
                                         "expected a prefilter model file")
                h.update(chunk)
                dst.write(chunk)
        got = h.hexdigest()
        if got != sha256:
            raise DigestMismatch(f"digest mismatch: the file at {source} has sha256 {got}, the rollout names "
                                 f"{sha256}; refused, nothing changed (a changed or half-copied file at the "
                                 "source?)")
        part.replace(final)
    except (OSError, urllib.error.URLError) as exc:
        raise EdgeAgentError(f"cannot copy the model from {source} into {staging}: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    return final

