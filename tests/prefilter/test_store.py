"""The model store beside a running model (agent.prefilter.store): sidecars, atomic install, bounded history,
damaged entries, the lock. Files are small stand-ins: the store never reads a model's content but its digest."""

from __future__ import annotations

import json
import pathlib
import stat

import pytest

from agent.errors import ModelError
from agent.prefilter.store import InstalledFiles, ModelStore, card_of, sidecars_of


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def files_of(folder: pathlib.Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.is_file()}


def test_the_sidecars_of_a_model(tmp_path: pathlib.Path) -> None:
    model = write(tmp_path / "x.int8.onnx", "int8")
    assert sidecars_of(model) == {}
    write(tmp_path / "x.md", "card of x and x.int8")  # models train / quantize: one card for both
    gate = write(tmp_path / "x.int8.gate.json", "{}")
    meta = write(tmp_path / "x.int8.json", "{}")
    assert card_of(model) == tmp_path / "x.md"
    assert sidecars_of(model) == {"gate": gate, "meta": meta, "card": tmp_path / "x.md"}
    assert "card" not in sidecars_of(model, card_fallback=False)  # an installed model: only its own <stem>.md
    own = write(tmp_path / "x.int8.md", "own card")
    assert card_of(model) == own


def test_install_replaces_every_file_and_removes_sidecars_the_new_model_lacks(tmp_path: pathlib.Path) -> None:
    target = write(tmp_path / "models" / "detector.onnx", "old model")
    write(tmp_path / "models" / "detector.gate.json", "old gate")
    write(tmp_path / "models" / "detector.md", "old card")
    new = write(tmp_path / "cand" / "c.onnx", "new model")
    write(tmp_path / "cand" / "c.json", '{"names": ["a"]}')
    store = ModelStore(target)
    with store.locked():
        saved = store.save_installed("replaced", "test")
        store.install(InstalledFiles.of(new))
    assert files_of(target.parent) == {"detector.json": '{"names": ["a"]}', "detector.onnx": "new model"}
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary file left
    assert files_of(saved.folder) | {"entry.json": ""} == {
        "detector.onnx": "old model", "detector.gate.json": "old gate", "detector.md": "old card", "entry.json": ""}
    entry = json.loads((saved.folder / "entry.json").read_text())
    assert entry["kind"] == "replaced" and entry["model_id"] == saved.model_id == f"detector@{saved.sha256[:12]}"
    with store.locked():
        store.install(saved.files())  # and back
    assert files_of(target.parent) == {"detector.gate.json": "old gate", "detector.md": "old card",
                                       "detector.onnx": "old model"}


def test_the_store_keeps_the_newest_entries_of_its_own_model(tmp_path: pathlib.Path) -> None:
    target = write(tmp_path / "detector.onnx", "v0")
    other = ModelStore(write(tmp_path / "other.onnx", "another model in the same folder"))
    store = ModelStore(target, keep=3)
    with other.locked():
        other.save_installed("replaced", "other")
    removed = []
    with store.locked():
        for i in range(1, 6):
            store.save_installed("replaced", f"before v{i}")
            target.write_text(f"v{i}")
            removed += store.prune()
    assert [e.note for e in store.entries()] == ["before v5", "before v4", "before v3"]  # newest first
    assert [e.note for e in removed] == ["before v1", "before v2"]  # the oldest went, one at a time
    assert not any(e.folder.exists() for e in removed)
    assert [e.note for e in other.entries()] == ["other"]  # another model's entries are not ours to prune
    latest = store.latest()
    assert latest is not None and latest.model.read_text() == "v4"
    assert store.latest("rolled_back") is None


def test_a_damaged_entry_is_not_restored(tmp_path: pathlib.Path) -> None:
    target = write(tmp_path / "detector.onnx", "v0")
    write(tmp_path / "detector.gate.json", "gate")
    store = ModelStore(target)
    with store.locked():
        entry = store.save_installed("replaced", "x")
    store.verify(entry)
    entry.model.write_text("tampered")
    with pytest.raises(ModelError, match=r"detector.onnx has sha256 \w{12}, saved as \w{12}; the stored file was "
                                         "changed and is not restored"):
        store.verify(entry)
    entry.model.write_text("v0")
    (entry.folder / "detector.gate.json").unlink()
    with pytest.raises(ModelError, match="its gate file detector.gate.json is missing"):
        store.verify(entry)
    (entry.folder / "entry.json").write_text("{not json")
    assert store.entries() == []  # an unreadable entry is no entry


def test_one_change_at_a_time(tmp_path: pathlib.Path) -> None:
    store = ModelStore(write(tmp_path / "detector.onnx", "v0"))
    with store.locked(), pytest.raises(ModelError, match="another promotion or rollback of .* is running"), \
            ModelStore(tmp_path / "detector.onnx").locked():
        pass


def test_the_log_is_json_lines_and_bounded(tmp_path: pathlib.Path) -> None:
    store = ModelStore(write(tmp_path / "detector.onnx", "v0"))
    for i in range(502):
        store.append_log({"action": "promote", "n": i})
    log = store.read_log()
    assert len(log) == 500 and log[0]["n"] == 2 and log[-1]["n"] == 501
    assert not [p for p in store.root.iterdir() if p.name.endswith(".tmp")]


def test_a_store_that_cannot_be_created_says_where(tmp_path: pathlib.Path) -> None:
    target = write(tmp_path / "detector.onnx", "v0")
    write(tmp_path / ".history", "a file where the store's folder goes")
    with pytest.raises(ModelError, match=f"cannot create the model store {tmp_path / '.history'}: .*must be "
                                         "writable by whoever promotes"), ModelStore(target).locked():
        pass


def test_installed_and_stored_files_get_a_safe_mode_not_the_candidates(tmp_path: pathlib.Path) -> None:
    target = write(tmp_path / "models" / "detector.onnx", "old model")
    target.chmod(0o600)
    new = write(tmp_path / "cand" / "c.onnx", "new model")
    card = write(tmp_path / "cand" / "c.md", "card")
    new.chmod(0o4777)  # setuid, world-writable, executable: none of it may travel with the file
    card.chmod(0o666)
    store = ModelStore(target)
    with store.locked():
        saved = store.save_installed("replaced", "test")
        store.install(InstalledFiles.of(new))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*target.parent.iterdir(), *saved.folder.iterdir()]
             if p.is_file() and p.suffix != ".json"}
    assert modes == {"detector.onnx": 0o644, "detector.md": 0o644}
    assert stat.S_IMODE((saved.folder / "detector.onnx").stat().st_mode) == 0o644
