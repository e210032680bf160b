"""One row of ``edge-agent doctor``: a check's name, status, what it found and what to do."""

from __future__ import annotations

import dataclasses
from typing import Literal

from agent.redact import redact

__all__ = ["Check", "Status"]

Status = Literal["OK", "WARN", "FAIL", "SKIP"]


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    todo: str = ""

    def __post_init__(self) -> None:  # every text a check shows passes the one redaction helper
        object.__setattr__(self, "detail", redact(self.detail))
        object.__setattr__(self, "todo", redact(self.todo))
