"""Learn mode's sampler and tally (agent.escalation.sampler): pure logic, the time passed in."""

from __future__ import annotations

import dataclasses
import datetime

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from agent.config.models import AgentConfig, LearnConfig
from agent.core.decision import TriageDecision
from agent.core.event import EscalationOutcome, TagEvent, build_event
from agent.escalation.sampler import FATES, LEARN_MODEL_ID, LearnSampler, LearnTally


def scene(seed: int) -> np.ndarray:
    """A 64x64 grey scene of smooth blobs; another seed is another scene (about half the hash bits differ)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4)).astype(np.float32)
    return np.asarray(cv2.resize(small, (64, 64), interpolation=cv2.INTER_CUBIC).clip(0, 255), np.uint8)


def test_first_frame_is_sent_then_the_schedule_and_scene_changes_decide() -> None:
    sampler = LearnSampler()
    config = LearnConfig(sample_per_minute=6, scene_change_bits=12, scene_changes_per_minute=6, scene_change_burst=1)
    a, b, c = scene(1), scene(2), scene(3)
    fates = [
        sampler.decide("cam", config, a, 0.0),  # first frame: always sent
        sampler.decide("cam", config, a, 1.0),  # same scene, schedule not due (every 10 s)
        sampler.decide("cam", config, b, 2.0),  # new scene: the scene-change budget (burst 1) has a token
        sampler.decide("cam", config, c, 3.0),  # another new scene: budget spent (one per 10 s)
        sampler.decide("cam", config, b, 4.0),  # back to the last frame sent: unchanged
        sampler.decide("cam", config, b, 10.5),  # 10 s after the first: the schedule is due, unchanged or not
        sampler.decide("cam", config, c, 12.5),  # a new scene, the budget refilled (10 s after the last one)
    ]
    assert fates == ["sampled_schedule", "skipped_unchanged", "sampled_scene_change", "skipped_rate",
                     "skipped_unchanged", "sampled_schedule", "sampled_scene_change"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # no schedule, no scene changes: only the first frame goes
        (LearnConfig(sample_per_minute=0, scene_change_bits=None), ["sampled_schedule"] + ["skipped_unchanged"] * 5),
        # schedule only, every 10 s: frames 0 s and 10 s (scene changes are not looked at)
        (LearnConfig(sample_per_minute=6, scene_change_bits=None),
         ["sampled_schedule", "skipped_unchanged", "skipped_unchanged", "skipped_unchanged", "sampled_schedule",
          "skipped_unchanged"]),
        # scene changes only, a budget of 3 at once: every new scene until the burst is spent
        (LearnConfig(sample_per_minute=0, scene_change_bits=12, scene_changes_per_minute=1, scene_change_burst=3),
         ["sampled_schedule", "sampled_scene_change", "sampled_scene_change", "sampled_scene_change",
          "skipped_rate", "skipped_rate"]),
    ],
)
def test_settings(config: LearnConfig, expected: list[str]) -> None:
    sampler = LearnSampler()
    # a new scene every frame, 3 s apart
    assert [sampler.decide("cam", config, scene(i), 3.0 * i + 0.5) for i in range(6)] == expected


def test_cameras_are_apart_and_new_settings_start_a_camera_afresh() -> None:
    sampler = LearnSampler()
    one, two = LearnConfig(sample_per_minute=1), LearnConfig(sample_per_minute=2)
    assert sampler.decide("cam", one, scene(1), 0.0) == "sampled_schedule"
    assert sampler.decide("cam", one, scene(1), 1.0) == "skipped_unchanged"
    assert sampler.decide("other", one, scene(1), 1.0) == "sampled_schedule"  # its own first frame
    assert sampler.decide("cam", two, scene(1), 2.0) == "sampled_schedule"  # a reload changed it: afresh
    assert sampler.decide("cam", two, scene(1), 3.0) == "skipped_unchanged"


def test_tally_counts_fates_and_first_publications_of_learn_frames_only() -> None:
    tally = LearnTally(["cam"])
    assert tally.snapshot() == {"cam": {f: 0 for f in FATES}}
    tally.fate("cam", "skipped_rate")
    now = datetime.datetime.now(datetime.timezone.utc)

    def event(model: str) -> TagEvent:
        return build_event(device="box", camera="cam", sequence=1, captured_at=now, frame_width=8, frame_height=8,
                           decision=TriageDecision("uncertain", ()), model_id=model, prefilter_latency_ms=0.0,
                           escalation=EscalationOutcome("unavailable", reason="down"))

    learn_event = event(LEARN_MODEL_ID)
    tally.outcome(learn_event)
    tally.outcome(event("detector@abc"))  # a prefilter's frame: not learn mode
    tally.outcome(dataclasses.replace(learn_event, revision=2))  # an update: counted once only
    expected: dict[str, int] = {**{f: 0 for f in FATES}, "skipped_rate": 1, "unavailable": 1}
    assert tally.snapshot()["cam"] == expected
    assert tally.status_fields() == {"learn": tally.snapshot()}
    assert LearnTally().status_fields() == {}  # no camera learns: nothing in the status


def base(**extra: object) -> dict[str, object]:
    return {"escalation": {"gateway": "127.0.0.1:50061"}, "cameras": [{"id": "a", "source": "synthetic://surface"}],
            **extra}


@pytest.mark.parametrize(
    ("doc", "learning", "needs_model"),
    [
        (base(), [], True),  # the default: inspect with the prefilter
        (base(model=None), ["a"], False),  # model: null -> every camera learns, no model loaded
        (base(mode="learn"), ["a"], False),  # the same, said in words
        # one camera learns, the other inspects with the model
        (base(cameras=[{"id": "a", "source": "s", "mode": "learn"}, {"id": "b", "source": "s"}]), ["a"], True),
        # every camera learns but one inspects
        (base(mode="learn", cameras=[{"id": "a", "source": "s"}, {"id": "b", "source": "s", "mode": "inspect"}]),
         ["a"], True),
    ],
)
def test_config_modes(doc: dict[str, object], learning: list[str], needs_model: bool) -> None:
    config = AgentConfig.model_validate(doc)
    assert [c.id for c in config.cameras if config.learns(c)] == learning
    assert config.needs_model is needs_model


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"model": None, "cameras": [{"id": "a", "source": "s"}]},
         "camera(s) a are in learn mode (mode: learn, or model: null), which sends a sample of their frames to the "
         "VLM, but escalation.gateway is not set"),
        (base(model=None, cameras=[{"id": "a", "source": "s", "mode": "inspect"}]),
         "model is null (no prefilter) but cameras[0] has mode: inspect, which needs a prefilter"),
        (base(model=None, mode="inspect"), "model is null (no prefilter) but mode is 'inspect'"),
        (base(model=None, dataset={"record": True}),
         "camera(s) a learn and record: their records are labelled with the plant's defect classes, which come "
         "from the taxonomy file; set taxonomy"),
        (base(learn={"sample_per_minute": -1}), "learn.sample_per_minute"),
        (base(learn={"scene_change_bits": 64}), "learn.scene_change_bits"),
    ],
)
def test_config_errors_name_what_is_wrong(doc: dict[str, object], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        AgentConfig.model_validate(doc)
    text = str(info.value)
    if "." in expected.split(" ")[0]:  # a field path: pydantic names it
        section, field = expected.split(".")
        assert section in text and field in text, text
    else:
        assert expected in text, text
