"""The near-duplicate cache: the perceptual hash on real synthetic frames, the matching rule, TTL and bounds."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from agent.capture.synthetic import ConveyorScene
from agent.escalation.dedupe import NearDuplicateCache, Signature, hamming, iou, phash, similarity


@functools.cache
def conveyor(n: int = 30) -> list[np.ndarray]:
    scene = ConveyorScene(seed=1)
    return [scene.next_frame()[0] for _ in range(n)]


def noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def test_hash_ignores_camera_noise_and_brightness_but_not_another_scene() -> None:
    frames = conveyor()
    a = frames[12]
    assert phash(a) == phash(a.copy())
    assert phash(a) < 2**63  # 63 bits: the DC term is left out
    for sigma in (2, 4, 8):  # sensor noise in grey levels
        assert hamming(phash(a), phash(noisy(a, sigma))) <= 2
    brighter = np.clip(a.astype(np.int16) + 12, 0, 255).astype(np.uint8)
    assert hamming(phash(a), phash(brighter)) <= 2
    assert hamming(phash(a), phash(frames[0])) >= 16  # the belt before this part came in
    assert hamming(phash(a), phash(frames[26])) >= 16  # the part has moved on
    assert phash(a[:, :, 0]) == phash(a[:, :, 0].copy())  # grey input works too


def test_hash_refuses_what_is_not_an_image() -> None:
    with pytest.raises(ValueError, match="expected an HxW or HxWx3 image"):
        phash(np.zeros((0, 0, 3), np.uint8))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),  # the same box
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),  # half overlaps: 50 / (100 + 100 - 50)
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),  # apart
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # empty boxes
    ],
)
def test_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float], expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)


BOX = (100.0, 100.0, 160.0, 140.0)
NEAR_BOX = (104.0, 102.0, 164.0, 142.0)  # IoU 0.79


@pytest.mark.parametrize(
    ("b", "expected"),
    [
        (Signature(0b1011, (("scratch", BOX),)), 0),  # the same
        (Signature(0b1000, (("scratch", NEAR_BOX),)), 2),  # 2 bits, the box moved a little
        (Signature(0b0100, (("scratch", BOX),)), None),  # 4 bits > 3
        (Signature(0b1011, (("stain", BOX),)), None),  # another label
        (Signature(0b1011, (("scratch", (300.0, 300.0, 360.0, 340.0)),)), None),  # the same label elsewhere
        (Signature(0b1011, (("scratch", BOX), ("scratch", BOX))), None),  # a second detection appeared
        (Signature(0b1011, ()), None),  # the detection is gone
    ],
)
def test_similarity(b: Signature, expected: int | None) -> None:
    a = Signature(0b1011, (("scratch", BOX),))
    assert similarity(a, b, max_distance=3, min_iou=0.5) == expected


def test_similarity_matches_boxless_classifier_tags_by_label() -> None:
    a = Signature(1, (("hole", None), ("stain", None)))
    assert similarity(a, Signature(1, (("hole", None), ("stain", None))), 0, 0.5) == 0
    assert similarity(a, Signature(1, (("hole", None), ("hole", None))), 0, 0.5) is None
    assert similarity(Signature(1, (("hole", BOX),)), Signature(1, (("hole", None),)), 0, 0.5) is None


def test_signature_of_a_frame_sorts_its_regions() -> None:
    image = conveyor()[5]
    sig = Signature.of(image, [("stain", BOX), ("hole", None)])
    assert sig.regions == (("hole", None), ("stain", BOX)) and sig.hash == phash(image)


def cache(**kw: float) -> NearDuplicateCache[str]:
    settings: dict[str, float] = {"max_distance": 3, "min_iou": 0.5, "ttl_s": 10.0, "max_entries": 4} | kw
    return NearDuplicateCache(max_distance=int(settings["max_distance"]), min_iou=settings["min_iou"],
                              ttl_s=settings["ttl_s"], max_entries=int(settings["max_entries"]))


def sig(h: int) -> Signature:
    return Signature(h, (("scratch", BOX),))


def test_find_gives_the_nearest_entry_of_the_same_camera() -> None:
    c = cache()
    c.put("cam1", sig(0b0000), "far", 0.0)
    c.put("cam1", sig(0b0001), "near", 0.0)
    c.put("cam2", sig(0b0011), "other camera", 0.0)
    hit = c.find("cam1", sig(0b0011), 1.0)
    assert hit is not None and (hit.value, hit.distance) == ("near", 1)
    assert c.find("cam3", sig(0b0011), 1.0) is None


def test_entries_expire_and_replace_refreshes() -> None:
    c = cache(ttl_s=10.0)
    key = c.put("cam", sig(1), "pending", 0.0, ttl_s=2.0)
    assert c.find("cam", sig(1), 1.9) is not None
    assert c.replace(key, "answer", 1.9)  # now lives ttl_s from 1.9
    hit = c.find("cam", sig(1), 11.8)
    assert hit is not None and hit.value == "answer"
    assert c.find("cam", sig(1), 11.9) is None and len(c) == 0
    assert not c.replace(key, "gone", 12.0)


def test_size_is_bounded_oldest_first() -> None:
    c = cache(max_entries=2, max_distance=0)
    c.put("cam", sig(1), "one", 0.0)
    key2 = c.put("cam", sig(2), "two", 0.0)
    c.put("cam", sig(4), "three", 0.0)
    assert len(c) == 2 and c.evicted == 1
    assert c.find("cam", sig(1), 0.0) is None
    c.remove(key2)
    assert [c.find("cam", sig(h), 0.0) is not None for h in (2, 4)] == [False, True]
