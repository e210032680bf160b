"""The label rule: a recorded frame's prefilter detections and VLM answer make its training labels. Pure logic.

Class names are the recording model's (``model.names``). The VLM *names* a class when one of its tags'
labels or defects' types is that class's name, matched case-folded with ``_``/``-``/spaces alike
(:func:`agent.taxonomy.model.normalise`); its other words (``part``, a defect the model has no class for)
are ignored and listed in the review file.

**Boxes** (YOLO, COCO) of an escalated frame, the VLM's answer deciding:

1. VLM ``uncertain``: the frame is left out (nothing to learn from it).
2. VLM ``pass``: a background image, no boxes; the prefilter's detections are dropped.
3. VLM ``defect``: start from the recorded detections (above the model's ``min_score`` floor, and
   ``--min-score`` when given), most confident first. The ones the prefilter *put forward* are its triage
   tags (at or above the triage's ``reject``); the rest are *below the band*.

   * a put-forward detection whose class the VLM named is kept (*confirmed*);
   * a named class with no put-forward detection of its own takes the single most confident detection of
     that class below the band (*confirmed_below_band*): the VLM says the defect is there and the
     prefilter's best guess of that class is its likeliest place. Only one: one word of the VLM does not
     confirm every faint guess of a class (a weak model makes many, most of them background);
   * a named class still without a box takes the most confident detection not yet used whose class the VLM
     did not name, put-forward ones first (*relabelled*), when there is one;
   * every other detection is dropped;
   * a frame where a named class still has no box is left out: training on it would teach the model that
     the defect is background. So is a ``defect`` answer that names no class of the model.

A **confident sample** (recorded without asking the VLM) keeps the prefilter's ``accepted`` detections
(confidence at or above the triage's ``accept``); a ``pass`` frame is a background image.

**Image class** (imagefolder, one class per image): VLM ``pass`` -> the pass class (``--pass-class``,
default ``pass``); VLM ``defect`` -> the named class the VLM was most confident of (tags by confidence,
then defects in the VLM's order; a frame that names several is listed in the review file); nothing named
or ``uncertain`` -> left out. Confident samples: ``pass`` -> the pass class, ``defect`` -> the most confident
accepted tag's class. A classifier's recording has no boxes: it exports to imagefolder only.

A frame *disagrees* when the VLM's classes are not the classes the prefilter put forward (its triage
tags), including a ``pass`` answer on a frame the prefilter suspected; every such frame and every frame
left out is a row of the review file.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from agent.dataset.record import DatasetRecord, RecordedDetection
from agent.taxonomy.model import normalise

__all__ = ["BoxLabel", "FrameLabel", "label_frame"]

BoxAction = Literal["boxes", "background", "excluded"]


@dataclasses.dataclass(frozen=True)
class BoxLabel:
    class_id: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    how: Literal["confirmed", "confirmed_below_band", "relabelled", "prefilter"]
    detected_as: str  # the prefilter's class for this box
    confidence: float


@dataclasses.dataclass(frozen=True)
class FrameLabel:
    """What the exporter does with one record."""

    box_action: BoxAction  # detection formats
    boxes: tuple[BoxLabel, ...]
    image_class: str | None  # imagefolder; None: left out
    disagrees: bool
    vlm_classes: tuple[str, ...]  # classes the VLM named, most confident first
    prefilter_classes: tuple[str, ...]  # classes of the triage's tags
    notes: tuple[str, ...]  # what was done and why, for the review file


def label_frame(record: DatasetRecord, *, pass_class: str = "pass", min_score: float = 0.0) -> FrameLabel:
    """The labels of one record by the module's rule."""
    put_forward = tuple(dict.fromkeys(t.label for t in record.tags))
    if record.vlm is None:
        return _confident(record, pass_class, put_forward)
    vlm = record.vlm
    if vlm.verdict == "uncertain":
        return FrameLabel("excluded", (), None, True, (), put_forward,
                          ("the VLM could not tell (verdict uncertain): left out",))
    if vlm.verdict == "pass":
        notes = [f"the VLM saw no defect: a background image; dropped the prefilter's {', '.join(put_forward)}"
                 if put_forward else "the VLM saw no defect: a background image"]
        return FrameLabel("background" if record.task == "detect" else "excluded", (), pass_class,
                          bool(put_forward), (), put_forward, tuple(notes))
    named, unknown = _named(record)
    notes = [f"the VLM's words that are no class of the model, ignored: {', '.join(unknown)}"] if unknown else []
    if not named:
        notes.append("the VLM answered defect but named no class of the model: left out")
        return FrameLabel("excluded", (), None, True, (), put_forward, tuple(notes))
    image_class = named[0]
    if len(named) > 1:
        notes.append(f"the VLM named several classes ({', '.join(named)}): imagefolder uses {image_class}, the "
                     "one it was most confident of")
    if record.task != "detect":
        return FrameLabel("excluded", (), image_class, set(named) != set(put_forward), named, put_forward,
                          tuple(notes))
    boxes, missing, box_notes = _boxes(record, named, min_score)
    notes += box_notes
    changed = any(b.how == "relabelled" for b in boxes) or bool(missing) or len(boxes) != len(
        [d for d in record.detections if d.box is not None and d.confidence >= min_score])
    disagrees = set(named) != set(put_forward) or changed
    if missing:
        notes.append(f"no box for {', '.join(missing)}, which the VLM named: left out of the detection export "
                     "(training on it would teach that the defect is background)")
        return FrameLabel("excluded", (), image_class, True, named, put_forward, tuple(notes))
    return FrameLabel("boxes", tuple(boxes), image_class, disagrees, named, put_forward, tuple(notes))


def _confident(record: DatasetRecord, pass_class: str, put_forward: tuple[str, ...]) -> FrameLabel:
    accepted = [t for t in record.tags if t.state == "accepted"]
    if record.verdict == "pass" or not accepted:
        return FrameLabel("background" if record.task == "detect" else "excluded", (), pass_class, False, (),
                          put_forward, ("confident sample: pass",))
    top = max(accepted, key=lambda t: t.confidence).label
    if record.task != "detect":
        return FrameLabel("excluded", (), top, False, (), put_forward, ("confident sample",))
    boxes = tuple(BoxLabel(t.class_id, t.box, "prefilter", t.label, t.confidence) for t in accepted
                  if t.box is not None and 0 <= t.class_id < len(record.names))
    return FrameLabel("boxes" if boxes else "background", boxes, top, False, (), put_forward,
                      ("confident sample: the prefilter's accepted detections",))


def _named(record: DatasetRecord) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(model classes the VLM named, most confident first; the VLM's other words)."""
    if record.vlm is None:
        return (), ()
    by_form = {normalise(n): n for n in record.names}
    words = [label for label, _conf in sorted(record.vlm.tags, key=lambda t: -t[1])]
    words += [d.get("type", "") for d in record.vlm.defects]
    named: dict[str, None] = {}
    unknown: dict[str, None] = {}
    for word in words:
        cls = by_form.get(normalise(word))
        if cls is not None:
            named[cls] = None
        elif word.strip():
            unknown[word] = None
    return tuple(named), tuple(unknown)


def _boxes(record: DatasetRecord, named: tuple[str, ...],
           min_score: float) -> tuple[list[BoxLabel], list[str], list[str]]:
    """(boxes, named classes without a box, notes) by the module's rule."""
    ids = {n: i for i, n in enumerate(record.names)}

    def usable(d: RecordedDetection) -> bool:
        return d.box is not None and d.confidence >= min_score and d.label in ids

    put_forward = sorted((t for t in record.tags if usable(t)), key=lambda d: -d.confidence)
    forward_keys = {(t.label, t.box) for t in record.tags}
    below = sorted((d for d in record.detections if usable(d) and (d.label, d.box) not in forward_keys),
                   key=lambda d: -d.confidence)
    boxes = [BoxLabel(ids[d.label], _box(d), "confirmed", d.label, d.confidence) for d in put_forward
             if d.label in named]
    boxed = {b.detected_as for b in boxes}
    notes: list[str] = []
    missing: list[str] = []
    spare = [d for d in put_forward + below if d.label not in named]
    for cls in named:
        if cls in boxed:
            continue
        weak = next((d for d in below if d.label == cls), None)
        if weak is not None:
            boxes.append(BoxLabel(ids[cls], _box(weak), "confirmed_below_band", cls, weak.confidence))
            notes.append(f"took the prefilter's best {cls} below the band ({weak.confidence:.2f}): the VLM named it")
        elif spare:
            d = spare.pop(0)
            boxes.append(BoxLabel(ids[cls], _box(d), "relabelled", d.label, d.confidence))
            notes.append(f"relabelled the prefilter's {d.label} ({d.confidence:.2f}) as {cls}, which the VLM named")
        else:
            missing.append(cls)
    dropped = len(put_forward) + len(below) - len(boxes)
    if dropped:
        notes.append(f"dropped {dropped} other detection(s): below the band or of a class the VLM did not name")
    return boxes, missing, notes


def _box(d: RecordedDetection) -> tuple[float, float, float, float]:
    if d.box is None:
        raise ValueError("a detection without a box")  # filtered out by the caller
    return d.box
