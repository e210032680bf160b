"""The bookkeeping of one edge node: the message sequence number, the birth/death sequence number (bdSeq,
kept in a small file so that it increments across restarts), and which primary host STATE is the latest.

Sparkplug 3.0 rules kept here (spec chapter 4; docs/sparkplug.md):

* ``seq``: NBIRTH carries 0; every later NBIRTH/DBIRTH/NDATA/DDATA of the node the next number, 0..255, 255
  followed by 0. A rebirth starts again at 0.
* ``bdSeq``: one per MQTT connection, 0..255 wrapping; the NDEATH registered as the will at CONNECT and the
  NBIRTH of that connection carry the same value; the next connection (a reconnect, or the next start of the
  agent) the next value.
* STATE: a message older (by its timestamp) than the latest one seen is ignored.
"""

from __future__ import annotations

import logging
import os
import pathlib
import tempfile

from agent.outputs.sparkplug.payloads import HostState

__all__ = ["BdSeqFile", "HostTracker", "SeqCounter"]

log = logging.getLogger(__name__)


class SeqCounter:
    """The node's message sequence number."""

    def __init__(self) -> None:
        self._next = 0

    def birth(self) -> int:
        """The NBIRTH's seq (0); the next message gets 1."""
        self._next = 1
        return 0

    def next(self) -> int:
        """The next message's seq (after 255 comes 0)."""
        value = self._next
        self._next = (value + 1) % 256
        return value


class BdSeqFile:
    """The bdSeq of the current connection, kept in ``path`` (one decimal number) so that a restart goes on from
    it. A missing file starts at 0; an unreadable one is reported and starts at 0 (a host then sees a bdSeq it
    may have seen before, which a new NBIRTH resolves)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.value = -1  # none used yet in this process

    def advance(self) -> int:
        """The next bdSeq (the one after the file's), written to the file before it is used."""
        previous = self.value if self.value >= 0 else self._read()
        self.value = (previous + 1) % 256
        self._write(self.value)
        return self.value

    def _read(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return -1
        except (OSError, UnicodeDecodeError) as exc:
            log.error("cannot read the Sparkplug bdSeq file %s (%s); starting again at bdSeq 0", self.path, exc)
            return -1
        if not text.isdigit() or int(text) > 255:
            log.error("the Sparkplug bdSeq file %s holds %r, not a number 0-255; starting again at bdSeq 0",
                      self.path, text[:20])
            return -1
        return int(text)

    def _write(self, value: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".bdseq-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(f"{value}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise


class HostTracker:
    """Whether the primary host is online, from its STATE messages (none configured: always online)."""

    def __init__(self, host_id: str | None) -> None:
        self.host_id = host_id
        self._latest: HostState | None = None
        self.online = host_id is None

    def update(self, state: HostState) -> bool:
        """Take a STATE message; True when it changed whether the host is online. An older one is ignored."""
        if self._latest is not None and state.timestamp < self._latest.timestamp:
            log.info("ignoring a STATE of host %s older than the latest one (%d < %d)", self.host_id,
                     state.timestamp, self._latest.timestamp)
            return False
        self._latest = state
        changed = state.online != self.online
        self.online = state.online
        return changed

    def reset(self) -> None:
        """A new connection: offline until its STATE says online (the broker sends the retained one)."""
        if self.host_id is not None:
            self.online = False
