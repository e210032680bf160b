"""Which file of a candidate is promoted, and whether it may replace the model the agent runs.

A file is taken as it is; a folder written by ``edge-agent models train`` gives the flavour that matches
the running model (:func:`resolve_candidate`). :func:`check_candidate` refuses a model of another task,
with other classes (unless they are meant to change), the very same file, or, when the config requires
it, an INT8 file without a passing gate record; :func:`resolve_first_candidate` and
:func:`check_first_candidate` do the same for a learning line's first model.
"""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING, Any

from agent.errors import ModelError

if TYPE_CHECKING:
    from agent.tooling.models import ModelSummary

__all__ = ["candidate_record", "check_candidate", "check_first_candidate", "folder_fp32", "resolve_candidate",
           "resolve_first_candidate"]


def resolve_candidate(candidate: pathlib.Path, running: ModelSummary) -> tuple[pathlib.Path, str]:
    """The candidate model file, and a note on how it was chosen.

    A file is taken as it is. A folder (as ``edge-agent models train`` writes it) must hold one FP32 model
    ``<name>.onnx`` (the one its ``candidate.json`` names, if it has one). When the running model is INT8,
    the folder's INT8 file of the running one's flavour (``<name>.int8.onnx`` for the CPU flavour,
    ``<name>.int8-trt.onnx`` for TensorRT) is taken, and a folder without it is refused (its gate refused it,
    or it was not made): running FP32 where INT8 ran is a choice to make by naming the FP32 file. When the
    running model is FP32 (or FP16), the FP32 file is taken.
    """
    from agent.tooling.quantize.int8 import FLAVOURS

    if candidate.is_file():
        return candidate, ""
    base, record = folder_fp32(candidate)
    if running.precision != "int8":
        return base, f"{base.name} from the candidate folder (the running model is {running.precision.upper()})"
    flavour = str((running.quantization or {}).get("flavour") or "cpu")
    if flavour not in FLAVOURS:
        flavour = "cpu"
    int8 = FLAVOURS[flavour].output_path(base)
    if not int8.is_file():
        why = f"candidate.json says: INT8 {record['int8']}" if isinstance(record.get("int8"), str) else \
            "did its INT8 gate refuse it?"
        raise ModelError(f"the running model is INT8 ({flavour} flavour) but the candidate folder {candidate} has "
                         f"no {int8.name} ({why}); promote {base} to run the FP32 model instead")
    return int8, f"{int8.name} from the candidate folder (the running model is INT8, {flavour} flavour)"


def folder_fp32(candidate: pathlib.Path) -> tuple[pathlib.Path, dict[str, Any]]:
    """A candidate folder's FP32 model (the one its ``candidate.json`` names, else its one ``<name>.onnx``) and
    its ``candidate.json`` ({} without one)."""
    from agent.tooling.quantize.int8 import FLAVOURS

    if not candidate.exists():
        raise ModelError(f"candidate {candidate} does not exist; expected an ONNX file or a candidate folder "
                         "written by `edge-agent models train`")
    record = candidate_record(candidate)
    named = (record.get("files") or {}).get("fp32") if isinstance(record.get("files"), dict) else None
    if isinstance(named, str) and (pathlib.PurePath(named).name != named or named in ("", ".", "..")):
        # candidate.json names files in its own folder: a path (../x.onnx, /etc/x) is not followed
        raise ModelError(f"candidate folder {candidate}: candidate.json files.fp32 {named!r} is not a file name in "
                         "the folder (a path is not followed); expected <name>.onnx as `edge-agent models train` "
                         "writes it")
    if isinstance(named, str) and (candidate / named).is_file():
        base = candidate / named
    else:
        onnx_files = sorted(p for p in candidate.glob("*.onnx") if not p.name.startswith("."))
        flavour_suffixes = tuple(f.suffix for f in FLAVOURS.values())
        fp32 = [p for p in onnx_files if not p.name.endswith(flavour_suffixes)]
        if len(fp32) != 1:
            found = ", ".join(p.name for p in onnx_files) or "no .onnx files"
            raise ModelError(f"candidate folder {candidate}: expected one FP32 model <name>.onnx (with its INT8 "
                             f"<name>.int8.onnx beside it), found {found}; give the model file instead")
        base = fp32[0]
    return base, record


def resolve_first_candidate(candidate: pathlib.Path) -> tuple[pathlib.Path, str]:
    """The candidate file for a line that runs no model yet: a file as it is; from a candidate folder its
    INT8 file (CPU flavour) when its gate made one, else its FP32 file, with a note saying which."""
    from agent.tooling.quantize.int8 import FLAVOURS

    if candidate.is_file():
        return candidate, ""
    fp32, _ = folder_fp32(candidate)
    int8 = FLAVOURS["cpu"].output_path(fp32)
    if int8.is_file():
        return int8, f"{int8.name} from the candidate folder (the line's first model: INT8 where the gate made one)"
    return fp32, f"{fp32.name} from the candidate folder (the line's first model; the folder has no {int8.name})"


def check_first_candidate(candidate: ModelSummary, require_gate: bool) -> list[str]:
    """The checks of :func:`check_candidate` that do not need a running model (a learning line's first one)."""
    notes = [f"first model: every camera learns and model.path does not exist yet; the candidate's classes "
             f"[{', '.join(candidate.names)}] are the line's, only the candidate is evaluated"]
    if candidate.precision == "int8" and candidate.gate_state != "passed":
        if require_gate:
            raise ModelError(f"{candidate.gate_detail} (model.require_gate is on: the agent would refuse it)")
        notes.append(f"warning: {candidate.gate_detail}; promoting it anyway (model.require_gate is off)")
    return notes


def candidate_record(folder: pathlib.Path) -> dict[str, Any]:
    """``candidate.json`` of a folder from ``edge-agent models train`` ({} when there is none or it is unreadable:
    the folder's files are then looked at directly)."""

    try:
        raw = json.loads((folder / "candidate.json").read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def check_candidate(current: ModelSummary, candidate: ModelSummary, require_gate: bool,
                    allow_new_classes: bool = False) -> list[str]:
    """ModelError when the candidate cannot replace the current model; otherwise notes (warnings) to print."""
    if candidate.sha256 == current.sha256:
        raise ModelError(f"candidate {candidate.path} is the model the agent already runs ({current.path}, "
                         f"sha256 {current.sha256[:12]}); nothing to promote")
    notes = []
    if candidate.task != current.task:
        if not allow_new_classes:
            raise ModelError(f"candidate {candidate.path} is a {candidate.task} model; the running model "
                             f"{current.path} is a {current.task} model. A promotion keeps the task (the triage and "
                             "the events' tags depend on it) unless you give --allow-new-classes (--val then holds "
                             "the candidate's classes; for an anomaly model: good and defective images)")
        notes.append(f"task change (--allow-new-classes): {current.task} -> {candidate.task}; the running model is "
                     "not compared")
    elif candidate.names != current.names:
        if not allow_new_classes:
            raise ModelError(f"candidate {candidate.path} has other classes than the running model: candidate "
                             f"[{', '.join(candidate.names)}], running [{', '.join(current.names)}]; class ids must "
                             "mean the same (retrain with the running model's classes, in its order), or give "
                             "--allow-new-classes to change the classes the agent detects (--val then holds the "
                             "candidate's classes)")
        notes.append(f"new classes (--allow-new-classes): [{', '.join(current.names)}] -> "
                     f"[{', '.join(candidate.names)}]; the running model is not compared")
    if candidate.precision == "int8" and candidate.gate_state != "passed":
        if require_gate:
            raise ModelError(f"{candidate.gate_detail} (model.require_gate is on: the agent would refuse it)")
        notes.append(f"warning: {candidate.gate_detail}; promoting it anyway (model.require_gate is off)")
    return notes
