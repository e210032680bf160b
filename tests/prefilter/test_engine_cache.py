"""The TensorRT engine cache on the CPU: the key, lookup/reuse/rebuild, corrupt and stale plans, and
the model preparation, with the GPU build replaced by a fake builder (the real one is in
test_tensorrt_gpu.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib

import onnx
import pytest

from agent.config.models import DEFAULT_MODEL, DEFAULT_PREFILTER, ModelConfig
from agent.errors import ModelError
from agent.prefilter.tensorrt.builder import BuildRequest, Heartbeat, PhaseTracker
from agent.prefilter.tensorrt.engine import default_batch, ensure_engine, prepare_model, read_model
from agent.prefilter.tensorrt.engine_cache import SIDECAR_SCHEMA, EngineCache
from agent.prefilter.tensorrt.engine_key import RECIPE_VERSION, BatchProfile, EngineKey
from agent.prefilter.tensorrt.platform import Platform

KEY = EngineKey(model_sha256="a" * 64, gpu_name="NVIDIA Jetson Orin", compute_capability="8.7",
                tensorrt_version="10.3.0", precision="int8", batch=BatchProfile(1, 4, 4))
ORIN = Platform(gpu_name="NVIDIA Jetson Orin", compute_capability="8.7", tensorrt_version="10.3.0")


class FakeBuilder:
    """Stands in for the GPU build: a plan whose bytes name what it was built from."""

    def __init__(self) -> None:
        self.calls = 0
        self.requests: list[BuildRequest] = []

    def plan_for(self, what: str) -> bytes:
        return f"plan #{self.calls} for {what}".encode() * 50

    def __call__(self, request: BuildRequest | None = None, report: object = None) -> bytes:
        self.calls += 1
        if request is not None:
            self.requests.append(request)
            return self.plan_for(f"{request.model_name} {request.precision.name} {request.batch}")
        return self.plan_for("key")


# -- key --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("1:4:8", BatchProfile(1, 4, 8)), ("4", BatchProfile(1, 4, 4)),
                                                 (" 2 : 2 : 2 ", BatchProfile(2, 2, 2)), ("1", BatchProfile(1, 1, 1))])
def test_batch_profile_parses(text: str, expected: BatchProfile) -> None:
    assert BatchProfile.parse(text) == expected
    assert BatchProfile.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["0", "4:2:8", "1:2", "a:b:c", "", "1:4:100", "0:1:1"])
def test_batch_profile_refuses_what_is_not_min_opt_max(text: str) -> None:
    with pytest.raises(ValueError, match="batch profile"):
        BatchProfile.parse(text)


def test_key_round_trips_and_its_digest_covers_every_part() -> None:
    assert EngineKey.from_dict(json.loads(json.dumps(KEY.as_dict()))) == KEY
    assert KEY.recipe == RECIPE_VERSION
    digests = {KEY.digest()}
    for changed in _each_changed_part(KEY).values():
        digests.add(changed.digest())
    assert len(digests) == 1 + len(_each_changed_part(KEY))  # every part changes the digest
    assert KEY.digest() == EngineKey.from_dict(KEY.as_dict()).digest()  # stable


def test_key_changes_name_each_part() -> None:
    newer = dataclasses.replace(KEY, tensorrt_version="10.16.1", batch=BatchProfile(1, 8, 8))
    assert newer.changes(KEY) == ["TensorRT version 10.3.0 -> 10.16.1", "batch profile 1:4:4 -> 1:8:8"]
    assert KEY.changes(KEY) == []


@pytest.mark.parametrize("bad", [None, [], {"model_sha256": "x"}, {**KEY.as_dict(), "recipe": "1"},
                                 {**KEY.as_dict(), "batch": "8:1:1"}])
def test_key_from_a_bad_sidecar_is_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        EngineKey.from_dict(bad)  # type: ignore[arg-type]


def _each_changed_part(key: EngineKey) -> dict[str, EngineKey]:
    return {
        "model file": dataclasses.replace(key, model_sha256="b" * 64),
        "GPU": dataclasses.replace(key, gpu_name="NVIDIA GeForce RTX 4090"),
        "compute capability": dataclasses.replace(key, compute_capability="8.9"),
        "TensorRT version": dataclasses.replace(key, tensorrt_version="10.16.1"),
        "precision": dataclasses.replace(key, precision="int8+fp16"),
        "batch profile": dataclasses.replace(key, batch=BatchProfile(1, 8, 8)),
        "edge-agent build recipe": dataclasses.replace(key, recipe=key.recipe + 1),
    }


# -- cache ------------------------------------------------------------------------------------------------


def test_reuses_the_plan_for_the_same_key(tmp_path: pathlib.Path) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    first, built = cache.get_or_build("m.onnx", KEY, build)
    assert built and build.calls == 1
    second, built_again = EngineCache(tmp_path).get_or_build("m.onnx", KEY, build)
    assert not built_again and build.calls == 1
    assert second.plan == first.plan and second.read_plan() == first.read_plan()
    record = json.loads(first.sidecar.read_text())
    assert record["schema"] == SIDECAR_SCHEMA and record["key"] == KEY.as_dict() and record["model_file"] == "m.onnx"
    assert record["plan_sha256"] == hashlib.sha256(first.read_plan()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.plan.name, first.sidecar.name])


@pytest.mark.parametrize("part", list(_each_changed_part(KEY)))
def test_rebuilds_when_any_key_part_changes(tmp_path: pathlib.Path, part: str) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    old, _ = cache.get_or_build("m.onnx", KEY, build)
    new_key = _each_changed_part(KEY)[part]
    lines: list[str] = []
    new, built = cache.get_or_build("m.onnx", new_key, build, lines.append)
    assert built and build.calls == 2 and new.plan != old.plan
    assert cache.lookup("m.onnx", new_key) is not None
    same_slot = new_key.precision == KEY.precision and new_key.batch == KEY.batch
    if same_slot:  # the old plan can never be used again: removed, and the rebuild says why
        assert not old.plan.exists() and not old.sidecar.exists()
        assert len(lines) == 1 and part in lines[0] and "out of date" in lines[0]
    else:  # another precision or batch profile is a variant of its own: kept
        assert cache.lookup("m.onnx", KEY) is not None
        assert lines == []
    assert not list(tmp_path.glob(".*.tmp"))


def test_other_models_are_left_alone(tmp_path: pathlib.Path) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    a, _ = cache.get_or_build("a.onnx", KEY, build)
    cache.get_or_build("b.onnx", dataclasses.replace(KEY, model_sha256="c" * 64), build)
    assert cache.lookup("a.onnx", KEY) == a


@pytest.mark.parametrize("damage", ["flip", "truncate", "sidecar garbage", "no sidecar", "sidecar other key",
                                    "sidecar wrong schema", "plan missing"])
def test_a_corrupt_or_mislabelled_plan_is_replaced_not_loaded(tmp_path: pathlib.Path, damage: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    entry, _ = cache.get_or_build("m.onnx", KEY, build)
    data = entry.plan.read_bytes()
    if damage == "flip":
        entry.plan.write_bytes(data[:10] + bytes([data[10] ^ 0xFF]) + data[11:])
    elif damage == "truncate":
        entry.plan.write_bytes(data[: len(data) // 2])
    elif damage == "sidecar garbage":
        entry.sidecar.write_text("{not json")
    elif damage == "no sidecar":
        entry.sidecar.unlink()
    elif damage == "sidecar other key":
        record = json.loads(entry.sidecar.read_text())
        record["key"]["tensorrt_version"] = "9.9"
        entry.sidecar.write_text(json.dumps(record))
    elif damage == "sidecar wrong schema":
        entry.sidecar.write_text(json.dumps({"schema": "something/else", "key": KEY.as_dict()}))
    else:
        entry.plan.unlink()
    with caplog.at_level(logging.WARNING, logger="agent.prefilter.tensorrt.engine_cache"):
        assert cache.lookup("m.onnx", KEY) is None
    assert [r for r in caplog.records if "removing it and building again" in r.getMessage()]
    assert not entry.plan.exists() and not entry.sidecar.exists()
    rebuilt, built = cache.get_or_build("m.onnx", KEY, build)
    assert built and build.calls == 2
    assert cache.lookup("m.onnx", KEY) == rebuilt


def test_invalidate_drops_a_plan_tensorrt_refused(tmp_path: pathlib.Path) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    entry, _ = cache.get_or_build("m.onnx", KEY, build)
    cache.invalidate(entry, "was refused by TensorRT")
    assert cache.lookup("m.onnx", KEY) is None
    _, built = cache.get_or_build("m.onnx", KEY, build)
    assert built and build.calls == 2


def test_unwritable_cache_dir_is_an_error_before_any_build(tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    build = FakeBuilder()
    with pytest.raises(ModelError, match=r"a-file/engines is not a writable directory.*engine_cache_dir"):
        EngineCache(blocker / "engines").get_or_build("m.onnx", KEY, build)
    assert build.calls == 0


def test_a_failed_build_leaves_nothing_behind(tmp_path: pathlib.Path) -> None:
    def failing() -> bytes:
        raise ModelError("TensorRT did not build an engine")

    with pytest.raises(ModelError, match="did not build"):
        EngineCache(tmp_path).get_or_build("m.onnx", KEY, failing)
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(".write-test")] == []
    with pytest.raises(ModelError, match="empty engine"):
        EngineCache(tmp_path).get_or_build("m.onnx", KEY, lambda: b"")


# -- preparing a model and ensure_engine --------------------------------------------------------------------


def test_prepare_frees_the_batch_and_resolves_precision() -> None:
    proto, meta = read_model(DEFAULT_MODEL)
    prepared = prepare_model(DEFAULT_MODEL, proto, "fp16", BatchProfile(1, 4, 4))
    assert prepared.precision.name == "fp16" and prepared.precision.fp16 and not prepared.precision.int8
    assert prepared.input_name == "images" and prepared.chw == (3, 320, 320)
    graph = onnx.load_from_string(prepared.onnx).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert prepared.metadata == meta and "names" in meta
    single = prepare_model(DEFAULT_MODEL, read_model(DEFAULT_MODEL)[0], "auto", BatchProfile(1, 1, 1))
    assert single.precision.name == "fp32"
    assert onnx.load_from_string(single.onnx).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_prepare_refuses_the_cpu_int8_flavour_and_int8_without_qdq() -> None:
    with pytest.raises(ModelError, match=r"cannot be built by TensorRT: .*unsigned 8-bit.*--flavour tensorrt"):
        prepare_model(DEFAULT_PREFILTER, read_model(DEFAULT_PREFILTER)[0], "auto", BatchProfile(1, 1, 1))
    with pytest.raises(ModelError, match=r"not quantized.*--flavour tensorrt.*fp16"):
        prepare_model(DEFAULT_MODEL, read_model(DEFAULT_MODEL)[0], "int8", BatchProfile(1, 1, 1))
    with pytest.raises(ModelError, match="does not exist"):
        read_model(pathlib.Path("/nonexistent/model.onnx"))


def test_default_batch_follows_max_batch_for_detectors_only() -> None:
    assert default_batch("detect", 4) == BatchProfile(1, 4, 4)
    assert default_batch("detect", 1) == BatchProfile(1, 1, 1)
    assert default_batch("classify", 4) == BatchProfile(1, 1, 1)


def test_ensure_engine_reuses_then_rebuilds_for_a_changed_model_or_platform(tmp_path: pathlib.Path) -> None:
    model = tmp_path / "det.onnx"
    model.write_bytes(DEFAULT_MODEL.read_bytes())
    cache_dir, build, lines = tmp_path / "engines", FakeBuilder(), []

    def ensure(platform: Platform = ORIN) -> tuple[object, bool]:
        prepared = prepare_model(model, read_model(model)[0], "fp16", BatchProfile(1, 4, 4))
        return ensure_engine(prepared, cache_dir, platform, build, lines.append)

    first, built = ensure()
    assert built and build.calls == 1
    request = build.requests[0]
    assert (request.input_name, request.chw, str(request.batch)) == ("images", (3, 320, 320), "1:4:4")
    assert request.timing_cache == cache_dir / "timing.NVIDIA_Jetson_Orin.sm8.7.trt10.3.0.cache"
    assert any("building a TensorRT engine for det.onnx" in line for line in lines)
    assert ensure() == (first, False) and build.calls == 1

    proto = onnx.load(str(model))  # retrained: same name, other weights
    proto.metadata_props.add(key="edge_agent_note", value="retrained")
    onnx.save(proto, str(model))
    _, built = ensure()
    assert built and build.calls == 2 and any("model file" in line and "out of date" in line for line in lines)

    _, built = ensure(dataclasses.replace(ORIN, tensorrt_version="10.16.1"))
    assert built and build.calls == 3 and any("TensorRT version 10.3.0 -> 10.16.1" in line for line in lines)
    assert len(list(cache_dir.glob("*.plan"))) == 1  # superseded plans are removed


def test_runtime_tensorrt_without_the_module_is_a_clear_model_error(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here: the missing-module message cannot be seen")
    from agent.prefilter.factory import open_prefilter

    config = ModelConfig(path=DEFAULT_MODEL, runtime="tensorrt", precision="fp16", engine_cache_dir=tmp_path)
    with pytest.raises(ModelError, match=r"tensorrt Python module.*edge-agent\[tensorrt\].*JetPack"):
        open_prefilter(DEFAULT_MODEL, config)


# -- progress ---------------------------------------------------------------------------------------------


def test_phase_tracker_reports_phases_steps_and_elapsed_time() -> None:
    now = [0.0]
    lines: list[str] = []
    tracker = PhaseTracker(lines.append, every_s=5.0, clock=lambda: now[0])
    tracker.phase_start("Building engine", None, 3)
    tracker.phase_start("Tactic selection", "Building engine", 40)
    for step in range(40):
        now[0] += 0.5
        assert tracker.step_complete("Tactic selection", step)
    tracker.phase_finish("Tactic selection")
    tracker.phase_finish("Building engine")
    assert lines[0] == "Building engine: started (3 steps)"
    assert lines[1] == "  Tactic selection: started (40 steps)"
    steps = [line for line in lines if "/40" in line]
    assert steps == ["  Tactic selection: 10/40 (5 s)", "  Tactic selection: 20/40 (10 s)",
                     "  Tactic selection: 30/40 (15 s)", "  Tactic selection: 40/40 (20 s)"]
    assert lines[-2:] == ["  Tactic selection: done in 20.0 s", "Building engine: done in 20.0 s"]
    tracker.cancel()
    assert tracker.step_complete("anything", 0) is False


def test_heartbeat_says_the_build_is_still_running() -> None:
    lines: list[str] = []
    with Heartbeat(lines.append, "TensorRT build", every_s=0.05):
        import time

        time.sleep(0.3)
    count = len(lines)
    assert count >= 2 and all(line.startswith("TensorRT build: still running, ") for line in lines)
    time.sleep(0.15)
    assert len(lines) == count  # stopped with the block
