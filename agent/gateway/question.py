"""The gateway's question about the plant's own line, from its taxonomy; and the Modelfile made from it.

With ``taxonomy: FILE`` in the gateway's config (the same file the agents use), the question is built once
at start (:func:`load_inspection`), not per call:

* the system prompt names what the camera looks at (the taxonomy's ``line.part``) and what a good part
  looks like (``line.good``);
* the user prompt lists each canonical label with its words and ``description``;
* the answer schema's defect enum is the taxonomy's canonical labels (and ``other``), so every defect the
  VLM names maps through the taxonomy on the agent's side;
* with ``line.reference_image``, that photo of a good part is sent with every question, after the frame
  and before the crops, and the prompt says which image it is. It costs ``ollama.image_tokens`` like any
  image: when a question does not fit the model's context, the crops are left out first (they are about
  this frame), then the reference image (the text still says what good looks like); the answer's notes
  say so (:mod:`agent.gateway.vlm`).

Without a taxonomy the gateway asks about parts on a conveyor belt, naming ``defect_classes``. A taxonomy
and an explicit ``defect_classes`` naming a word the taxonomy does not map are a config error.

:func:`modelfile_text` writes an Ollama Modelfile whose ``SYSTEM`` is this question's system prompt and
defect list (``edge-agent gateway-modelfile``).
"""

from __future__ import annotations

import pathlib
import re

from agent.errors import ConfigError, RequestRejected
from agent.gateway.config import GatewayConfig
from agent.gateway.images import check_image
from agent.gateway.templates import OTHER_DEFECT, Inspection, conveyor_inspection, make_inspection
from agent.taxonomy.model import Taxonomy, normalise

__all__ = ["MODELFILE_PARAMETERS", "line_inspection", "load_inspection", "modelfile_text"]

_ANSWER_RULE = "You answer only with one JSON object that matches the schema you are given, with no other text."
_MODELFILE_NUM_CTX = 4096  # a frame, a few crops and the prompt (LLaVA 1.5: 576 tokens per 336x336 image)
_REFERENCE_NUM_CTX = 6144  # one more image with every question
MODELFILE_PARAMETERS: tuple[tuple[str, str], ...] = (
    ("temperature", "0.1"), ("top_k", "20"), ("top_p", "0.9"), ("seed", "42"), ("num_predict", "512"),
    ("repeat_penalty", "1.1"), ("stop", '"</s>"'), ("stop", '"USER:"'))
"""The Modelfile's PARAMETER lines apart from num_ctx (as models/Modelfile: near-greedy, repeatable)."""


def line_inspection(taxonomy: Taxonomy, reference: bytes | None = None) -> Inspection:
    """The question about the taxonomy's line; ``reference`` is the checked bytes of its reference image."""
    line = taxonomy.line
    part = line.part if line is not None else "parts on a production line"
    good = f" A good part, with no defect, shows {_clause(line.good)}." if line is not None and line.good else ""
    system = (f"You are a visual quality inspector on a production line. You look at photos of this line: "
              f"{_clause(part)}. You report its manufacturing defects.{good} {_ANSWER_RULE}")
    labels = [entry.label for entry in taxonomy.entries]
    what = f"the first image ({_clause(line.part)})" if line is not None else "the part in the first image"
    lines = [f"Inspect {what} for these defect types (a defect's type is the quoted name, exactly as written):"]
    for entry in taxonomy.entries:
        words = [w for w in dict.fromkeys(entry.synonyms) if normalise(w) != normalise(entry.label)]
        also = f" (also called {', '.join(words)})" if words else ""
        text = f": {_clause(entry.description)}" if entry.description else ""
        lines.append(f"- \"{entry.label}\"{text}{also}")
    lines.append(f"Use type \"{OTHER_DEFECT}\" for any other defect.")
    reference_text = ("The second image is a reference photo of a good part of this line, with no defect: "
                      "compare the first image with it. It is not the part to inspect.")
    return make_inspection(system=system, defects_text="\n".join(lines), defect_types=labels,
                           reference=reference, reference_text=reference_text if reference is not None else "")


def load_inspection(config: GatewayConfig, source: str = "gateway config") -> Inspection:
    """The gateway's question: from ``config.taxonomy`` (read, checked against ``defect_classes``, its
    reference image read and decoded), else the conveyor question. ConfigError (about ``source``) naming
    every problem."""
    if config.taxonomy is None:
        return conveyor_inspection(config.defect_classes)
    from agent.config.taxonomy import load_taxonomy

    file = str(config.taxonomy)
    try:
        taxonomy = load_taxonomy(config.taxonomy)
    except ConfigError as exc:
        raise ConfigError([f"taxonomy ({exc.source}): {problem}" for problem in exc.problems], source) from exc
    problems = []
    if "defect_classes" in config.model_fields_set:
        unmapped = [c for c in config.defect_classes if taxonomy.map(c) is None]
        if unmapped:
            problems.append(f"defect_classes {unmapped} are not labels or synonyms of the taxonomy ({file}); "
                            "with a taxonomy the question names its labels: remove defect_classes, or add the "
                            "words to the taxonomy")
    reference = None
    if taxonomy.line is not None and taxonomy.line.reference_image is not None:
        try:
            reference = _reference_image(taxonomy.line.reference_image, config)
        except ValueError as exc:
            problems.append(f"taxonomy ({file}): line.reference_image: {exc}")
    if problems:
        raise ConfigError(problems, source)
    return line_inspection(taxonomy, reference)


def _reference_image(path: pathlib.Path, config: GatewayConfig) -> bytes:
    """The image's bytes, checked as the gateway checks a request's images; ValueError saying what is wrong."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; expected a JPEG or PNG photo of a good part") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    limits = config.limits
    try:
        check_image(data, what=str(path), max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels,
                    max_scans=limits.max_jpeg_scans)
    except RequestRejected as exc:
        raise ValueError(str(exc)) from None
    return data


def modelfile_text(inspection: Inspection, base: str = "llava:7b", name: str = "edge-inspector",
                   source: str = "") -> str:
    """An Ollama Modelfile: ``FROM base``, the inspection's system prompt and defect list as ``SYSTEM``, and
    :data:`MODELFILE_PARAMETERS` with a num_ctx that leaves room for the reference image when there is one."""
    system = f"{inspection.system}\n{inspection.defects_text}".replace('"""', '"')
    num_ctx = _REFERENCE_NUM_CTX if inspection.reference is not None else _MODELFILE_NUM_CTX
    header = [f"# {name}: {base} asked about this line's parts" + (f" (from {source})" if source else ""),
              "# Build it on the gateway host (after `ollama pull " + base + "`):", "#",
              f"#     ollama create {name} -f Modelfile", "#",
              f"# then set `ollama.model: {name}` in the gateway's config. The gateway still sends its own",
              "# system prompt, temperature, num_ctx and num_predict with every call (they win over these).", ""]
    body = [f"FROM {base}", "", f'SYSTEM """{system}"""', "",
            *(f"PARAMETER {key} {value}" for key, value in MODELFILE_PARAMETERS), f"PARAMETER num_ctx {num_ctx}"]
    return "\n".join([*header, *body]) + "\n"


def _clause(text: str) -> str:
    """``text`` as a clause inside a sentence: single-spaced, without a final full stop."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".")


