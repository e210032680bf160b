"""Question templates and the answer schema: what the gateway asks the VLM and what it accepts back.

Pure logic, no I/O. A template (looked up by the request's ``template_id``)
turns the request's hints (the prefilter's detections, the crops) into a
:class:`Prompt`: a system prompt, a user prompt, the images, and the JSON Schema
that goes into Ollama's ``format``.

Two schemas per question, built from one description:

* :func:`answer_schema` is sent to Ollama in ``format``. Current Ollama hands it to
  llama-server as ``json_schema``, whose grammar enforces while decoding ``type``,
  ``properties``, ``required``, ``items``, ``enum``, ``additionalProperties``
  (false by default), ``minLength``/``maxLength``, ``minItems``/``maxItems``,
  ``pattern``, and ``minimum``/``maximum`` for integers only (llama.cpp's
  ``grammars/README.md``); so it carries those constraints and no others.
* :func:`validation_schema` adds what the grammar skips: the bounds of the
  ``number`` confidences. :func:`parse_answer` checks the answer against it with
  ``jsonschema`` after the call (also catching an answer cut off by
  ``num_predict``, or an older Ollama that enforced less); a mismatch makes the
  gateway ask once more.

The parts of a question that do not change from frame to frame (system prompt,
defect types and their descriptions, the schema, a reference image of a good part)
are an :class:`Inspection`, built once when the gateway starts: the conveyor default
from the gateway's ``defect_classes`` (:func:`conveyor_inspection`), or the plant's
line from its taxonomy (:mod:`agent.gateway.question`).

The images are, in order: the frame, the reference image of a good part (when the
inspection has one), the crops. A :class:`Prompt` can be rebuilt with fewer crops
(:meth:`Prompt.keep_crops`) or without the reference (:meth:`Prompt.without_reference`):
when the question would not fit the model's context the gateway leaves crops out,
last first, then the reference image; the frame always stays.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from jsonschema import Draft202012Validator

from agent.errors import RequestRejected

__all__ = [
    "DEFAULT_TEMPLATE",
    "GRAMMAR_KEYWORDS",
    "Answer",
    "AnswerDefect",
    "AnswerTag",
    "Hint",
    "Inspection",
    "InvalidAnswer",
    "Prompt",
    "QuestionTemplate",
    "answer_schema",
    "conveyor_inspection",
    "get_template",
    "make_inspection",
    "parse_answer",
    "template_ids",
    "validation_schema",
]

Verdict = Literal["pass", "defect", "uncertain"]
Severity = Literal["low", "medium", "high"]
VERDICTS: tuple[Verdict, ...] = ("pass", "defect", "uncertain")
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high")
OTHER_DEFECT = "other"

GRAMMAR_KEYWORDS = frozenset({"type", "properties", "required", "items", "enum", "additionalProperties",
                              "minLength", "maxLength", "minItems", "maxItems"})
"""The JSON Schema keywords used in the schema sent to Ollama: all enforced by llama-server's grammar."""

DEFAULT_TEMPLATE = "inspect-v1"
"""The template used when a request leaves ``template_id`` empty."""


# -- the answer -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AnswerTag:
    label: str
    confidence: float


@dataclasses.dataclass(frozen=True)
class AnswerDefect:
    type: str
    location: str
    severity: Severity


@dataclasses.dataclass(frozen=True)
class Answer:
    """The VLM's answer, checked against the validation schema."""

    verdict: Verdict
    tags: tuple[AnswerTag, ...]
    defects: tuple[AnswerDefect, ...]
    description: str


class InvalidAnswer(ValueError):
    """The VLM's text is not JSON, or not JSON matching the answer schema. The message says where."""


def answer_schema(defect_types: Sequence[str]) -> dict[str, Any]:
    """The schema sent in Ollama's ``format``: keywords llama-server's grammar enforces (module doc)."""
    return {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": list(VERDICTS)},
            "tags": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"label": {"type": "string", "minLength": 1, "maxLength": 64},
                                   "confidence": {"type": "number"}},
                    "required": ["label", "confidence"],
                    "additionalProperties": False,
                },
                "maxItems": 32,
            },
            "defects": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string", "enum": _defect_enum(defect_types)},
                        "location": {"type": "string", "maxLength": 200},
                        "severity": {"type": "string", "enum": list(SEVERITIES)},
                    },
                    "required": ["type", "location", "severity"],
                    "additionalProperties": False,
                },
                "maxItems": 32,
            },
            "description": {"type": "string", "maxLength": 1000},
        },
        "required": ["verdict", "tags", "defects", "description"],
        "additionalProperties": False,
    }


def validation_schema(defect_types: Sequence[str]) -> dict[str, Any]:
    """:func:`answer_schema` plus what the grammar skips (number bounds), checked after the call."""
    schema = answer_schema(defect_types)
    schema["properties"]["tags"]["items"]["properties"]["confidence"].update(minimum=0, maximum=1)
    return schema


def _defect_enum(defect_types: Sequence[str]) -> list[str]:
    return [*dict.fromkeys(defect_types), *([] if OTHER_DEFECT in defect_types else [OTHER_DEFECT])]


@functools.lru_cache(maxsize=16)
def _validator(defect_types: tuple[str, ...]) -> Draft202012Validator:
    return Draft202012Validator(validation_schema(defect_types))


def parse_answer(content: str, defect_types: Sequence[str]) -> Answer:
    """Parse and check the VLM's ``message.content``. Raises InvalidAnswer naming the first problems."""
    try:
        doc = json.loads(content)
    except json.JSONDecodeError as exc:
        excerpt = content[:80] + ("..." if len(content) > 80 else "")
        raise InvalidAnswer(f"not JSON ({exc.msg} at character {exc.pos}): {excerpt!r}") from None
    errors = sorted(_validator(tuple(defect_types)).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(f"{_json_path(e.absolute_path)}: {e.message}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise InvalidAnswer(f"does not match the answer schema: {problems}{more}")
    return Answer(
        verdict=doc["verdict"],
        tags=tuple(AnswerTag(t["label"], float(t["confidence"])) for t in doc["tags"]),
        defects=tuple(AnswerDefect(d["type"], d["location"], d["severity"]) for d in doc["defects"]),
        description=doc["description"].strip(),
    )


def _json_path(path: Sequence[object]) -> str:
    text = "$"
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text


# -- questions ----------------------------------------------------------------------------------

Box = tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class Hint:
    """One prefilter detection or crop the question mentions (box in source-frame pixels)."""

    label: str
    confidence: float
    box: Box | None


@dataclasses.dataclass(frozen=True)
class Prompt:
    """Everything one Ollama chat call needs, apart from the connection settings."""

    template_id: str
    system: str
    user: str
    images: tuple[bytes, ...]
    schema: dict[str, Any]
    defect_types: tuple[str, ...]
    crops: int = 0
    """How many of ``images`` are crops (they are the last ones)."""
    references: int = 0
    """1 when the second image is the reference photo of a good part (it follows the frame), else 0."""
    with_crops: Callable[[int, bool], Prompt] | None = dataclasses.field(default=None, compare=False, repr=False)
    """Rebuilds the prompt with only the first N crops, with or without the reference image (set by
    :meth:`QuestionTemplate.build`)."""

    def keep_crops(self, count: int) -> Prompt:
        """The same question with only the first ``count`` crops (text and images)."""
        if self.with_crops is None or count >= self.crops:
            return self
        return self.with_crops(max(count, 0), self.references > 0)

    def without_reference(self) -> Prompt:
        """The same question without the reference image of a good part (text and image)."""
        if self.with_crops is None or not self.references:
            return self
        return self.with_crops(self.crops, False)


@dataclasses.dataclass(frozen=True)
class Inspection:
    """The parts of the question that are the same for every frame, built once when the gateway starts
    (:func:`conveyor_inspection`, or :func:`agent.gateway.question.line_inspection` from the plant's
    taxonomy): the system prompt, the sentence naming the defect types, the answer schema (as sent and as
    written into the prompt), and the optional reference image of a good part."""

    system: str
    defects_text: str
    defect_types: tuple[str, ...]
    """The answer schema's defect enum (``other`` included)."""
    schema: dict[str, Any]
    schema_text: str
    subject: str = "part"
    """What the first image shows, as the prompt names it ("part", "surface", ...)."""
    reference: bytes | None = None
    """A photo of a good part, sent after the frame (before any crop) with every question."""
    reference_text: str = ""


_INSPECT_SYSTEM = (
    "You are a visual quality inspector on a production line. You look at photos of parts on a conveyor "
    "belt and report manufacturing defects. You answer only with one JSON object that matches the schema "
    "you are given, with no other text."
)


def make_inspection(*, system: str, defects_text: str, defect_types: Sequence[str], subject: str = "part",
                    reference: bytes | None = None, reference_text: str = "") -> Inspection:
    """An :class:`Inspection` with its schema (and the schema's JSON text) built from ``defect_types``."""
    types = tuple(_defect_enum(defect_types))
    schema = answer_schema(types)
    return Inspection(system=system, defects_text=defects_text, defect_types=types, schema=schema,
                      schema_text=json.dumps(schema, separators=(",", ":")), subject=subject,
                      reference=reference, reference_text=reference_text)


@functools.lru_cache(maxsize=16)
def _conveyor(defect_classes: tuple[str, ...]) -> Inspection:
    return make_inspection(
        system=_INSPECT_SYSTEM, defect_types=defect_classes,
        defects_text=(f"Inspect the part in the first image for these defect types: {', '.join(defect_classes)}. "
                      f"Use type \"{OTHER_DEFECT}\" for any other defect."))


def conveyor_inspection(defect_classes: Sequence[str]) -> Inspection:
    """The question without a taxonomy: parts on a conveyor belt, the gateway's ``defect_classes`` (cached)."""
    return _conveyor(tuple(defect_classes))


class _Builder(Protocol):
    def __call__(self, template_id: str, image: bytes, crops: Sequence[tuple[bytes, Hint]],
                 detections: Sequence[Hint], source_size: tuple[int, int] | None,
                 inspection: Inspection) -> Prompt: ...


@dataclasses.dataclass(frozen=True)
class QuestionTemplate:
    id: str
    summary: str
    builder: _Builder

    def build(self, *, image: bytes, crops: Sequence[tuple[bytes, Hint]], detections: Sequence[Hint],
              source_size: tuple[int, int] | None, defect_classes: Sequence[str] = (),
              inspection: Inspection | None = None, reference: bool = True) -> Prompt:
        """The prompt for one frame: the frame, the reference image of a good part (when ``inspection`` has
        one and ``reference``), then ``crops`` as further images, in order. Without ``inspection``: the
        conveyor question naming ``defect_classes``."""
        question = inspection if inspection is not None else conveyor_inspection(defect_classes)
        if not reference and question.reference is not None:
            question = dataclasses.replace(question, reference=None, reference_text="")

        def rebuild(count: int, keep_reference: bool = True) -> Prompt:
            return self.build(image=image, crops=crops[:count], detections=detections, source_size=source_size,
                              inspection=question, reference=keep_reference)
        prompt = self.builder(self.id, image, crops, detections, source_size, question)
        return dataclasses.replace(prompt, crops=len(crops), references=int(question.reference is not None),
                                   with_crops=rebuild)


def _inspect_v1(template_id: str, image: bytes, crops: Sequence[tuple[bytes, Hint]], detections: Sequence[Hint],
                source_size: tuple[int, int] | None, inspection: Inspection) -> Prompt:
    lines = [inspection.defects_text]
    if inspection.reference is not None:
        lines.append(inspection.reference_text)
    if detections:
        frame = f" of the {source_size[0]}x{source_size[1]} frame" if source_size else ""
        lines.append(f"A fast detector marked these regions but is not sure (hints; they may be wrong; "
                     f"boxes are x1,y1,x2,y2 in pixels{frame}):")
        lines += [f"- {_hint_text(h)}" for h in detections]
    else:
        lines.append("A fast detector was not sure about this frame but marked no region.")
    if crops:
        lines.append(f"The next {len(crops)} image(s) are close-ups of regions of the same frame, in this order:")
        lines += [f"- close-up {i + 1}: {_hint_text(h)}" for i, (_, h) in enumerate(crops)]
    subject = inspection.subject
    lines.append(
        f'Answer with JSON: "verdict" is "defect" if the {subject} has at least one defect, "pass" if it has none, '
        '"uncertain" if the image does not let you tell; "tags" lists what you see, each with a label and a '
        'confidence from 0 to 1; "defects" lists every defect with its type, its location on the '
        f'{subject} in a few words, and a severity (low, medium or high); "description" is one or two sentences.')
    lines.append("The answer's JSON Schema: " + inspection.schema_text)
    reference = () if inspection.reference is None else (inspection.reference,)
    return Prompt(template_id=template_id, system=inspection.system, user="\n".join(lines),
                  images=(image, *reference, *(c for c, _ in crops)), schema=inspection.schema,
                  defect_types=inspection.defect_types)


def _hint_text(hint: Hint) -> str:
    text = f"{hint.label or 'unlabelled'} (confidence {hint.confidence:.2f})"
    if hint.box is not None:
        text += " at " + ",".join(f"{v:.0f}" for v in hint.box)
    return text


_TEMPLATES = {
    "inspect-v1": QuestionTemplate(
        "inspect-v1", "defect inspection of one part: verdict, tags, defects with location and severity",
        _inspect_v1),
}


def template_ids() -> list[str]:
    return sorted(_TEMPLATES)


def get_template(template_id: str) -> QuestionTemplate:
    """The template for ``template_id`` (empty: :data:`DEFAULT_TEMPLATE`); RequestRejected if unknown."""
    template = _TEMPLATES.get(template_id or DEFAULT_TEMPLATE)
    if template is None:
        raise RequestRejected(f"template_id {template_id[:64]!r} is unknown; this gateway knows: "
                              f"{', '.join(template_ids())} (leave it empty for {DEFAULT_TEMPLATE})")
    return template
