"""``edge-agent models train --task anomaly``: good frames -> an anomaly candidate folder.

1. checks (no torch): ``--out``; the good set (:mod:`.data`: counts, sizes, undecodable files); ``--defects``;
2. split the good frames: :data:`HELD_OUT_SHARE` held out (seeded) for the threshold, the rest for training;
3. train (:mod:`.fit`) within ``--time`` (or ``--steps``), one line per 50 steps;
4. export FP32 ONNX (:mod:`.export`); its scores on the held-out good frames give the threshold at
   ``--frr`` (the false-reject rate); the training frames scoring above it are named (defects mixed into the good
   folder show up there);
5. the validation set (:mod:`.valset`): held-out good frames, the same with generic synthetic anomalies, and
   the labelled defects; FP32 evaluated on it (image and pixel AUROC, false rejects, recall, precision);
6. INT8 (cpu flavour) through ``models quantize``'s workflow and gate, calibrated on training frames;
7. the model card ``OUT/<name>.md`` and ``OUT/candidate.json``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.errors import EdgeAgentError

HELD_OUT_SHARE = 0.2
DEFAULT_SIDE = 320  # the longer side of the model input when --imgsz is not given
Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class AnomalyTrainOptions:
    data: tuple[pathlib.Path, ...]
    out: pathlib.Path
    name: str
    imgsz: tuple[int, int] | None  # (height, width)
    steps: int
    time_s: float | None
    batch: int
    threads: int
    seed: int
    frr: float
    defects: pathlib.Path | None
    quantize: bool
    overwrite: bool
    command: str


def default_imgsz(sizes: dict[tuple[int, int], int]) -> tuple[int, int]:
    """(height, width) for the most common image size: the longer side DEFAULT_SIDE, both multiples of 8."""
    (w, h), _n = max(sizes.items(), key=lambda kv: kv[1])
    scale = DEFAULT_SIDE / max(w, h)
    return max(64, round(h * scale / 8) * 8), max(64, round(w * scale / 8) * 8)


def split_good(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices): HELD_OUT_SHARE of ``count`` held out, at least 10."""
    order = np.random.default_rng(seed).permutation(count)
    held = max(10, int(round(count * HELD_OUT_SHARE)))
    return np.sort(order[held:]), np.sort(order[:held])


def _defect_pairs(defects: pathlib.Path | None) -> list[tuple[pathlib.Path, pathlib.Path]]:
    if defects is None:
        return []
    from agent.tooling.evaluation.dataset import label_path, read_yolo_dataset

    dataset = read_yolo_dataset(defects, "val")
    pairs = [(item.path, label_path(item.path)) for item in dataset.images if len(item.boxes)]
    if not pairs:
        raise EdgeAgentError(f"--defects {defects}: none of its {len(dataset.images)} val images has a box; "
                             "expected labelled defect images (YOLO layout, a box around each defect)")
    return pairs


def run_anomaly_training(opts: AnomalyTrainOptions, say: Say) -> int:
    """Returns the exit code: 0, or 1 when the INT8 gate refused (the FP32 candidate is still written)."""
    from agent.tooling.training.anomaly.data import collect_good, warnings_for
    from agent.tooling.training.candidate import check_out_folder
    from agent.tooling.training.extras import require_train_extra

    check_out_folder(opts.out, opts.overwrite)
    good = collect_good(opts.data)
    for line in good.sources:
        say(f"good frames: {line}")
    for warning in warnings_for(good):
        say(f"warning: {warning}")
    defects = _defect_pairs(opts.defects)
    require_train_extra("anomaly")
    h, w = opts.imgsz or default_imgsz(good.sizes)
    with tempfile.TemporaryDirectory(prefix=f".{opts.out.name}-work-", dir=opts.out.parent if
                                     opts.out.parent.exists() else None) as tmp:
        from agent.tooling.training.anomaly.steps import train_and_judge

        record = train_and_judge(opts, good, defects, (h, w), pathlib.Path(tmp), say)
        opts.out.mkdir(parents=True, exist_ok=True)
        for path in pathlib.Path(tmp, "out").iterdir():
            shutil.move(str(path), opts.out / path.name)
    (opts.out / "candidate.json").write_text(json.dumps(record, indent=1) + "\n")
    say(f"candidate: {opts.out}")
    return 1 if record.get("int8", {}).get("refused") else 0


def elapsed(t0: float, c0: float) -> dict[str, Any]:
    return {"wall_s": round(time.monotonic() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)}
