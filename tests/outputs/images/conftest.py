"""Every images folder a test opens is closed after it (Python 3.13 warns about an unclosed SQLite connection)."""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from agent.outputs.images.store import ImageStore


@pytest.fixture(autouse=True)
def _close_stores(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    opened: list[ImageStore] = []
    real = ImageStore.open.__func__  # type: ignore[attr-defined]

    def tracked(cls: type[ImageStore], root: pathlib.Path, **kwargs: Any) -> ImageStore:
        store: ImageStore = real(cls, root, **kwargs)
        opened.append(store)
        return store

    monkeypatch.setattr(ImageStore, "open", classmethod(tracked))
    yield
    for store in opened:
        with contextlib.suppress(sqlite3.Error):
            store.close()
