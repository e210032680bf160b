"""The YOLOv8 ONNX detector: pre-process, forward, post-process.

``YoloDetector.from_file`` does the I/O (reads the file, opens the session, checks
the layout); ``__init__`` takes a ready session, so tests can pass a fake one.

Two ways to run it. ``infer``/``infer_batch``: the whole call on one thread, into the detector's own
preallocated input buffer. The staged surface the agent's pipelined loop uses (``agent.runtime.loop``):
``prepare(images, buffer)`` letterboxes into an :class:`InputBuffer` from ``new_input()``,
``forward(tensor)`` runs the session, ``finish(output, plans, spent_ms)`` decodes; each stage may run
on its own thread (one thread per stage at a time, but ``forward`` from up to ``concurrent_runs`` threads
at once, each with its own input buffer), so the next frames are prepared and the last ones decoded while
the model runs. ``infer`` is not safe to call from two threads at once.

With ``model.input_size: auto`` (a :class:`~agent.prefilter.sized_sessions.SizedSessions`) each frame runs at
the input size its shape fits (1280x960 at 256x320 for a 320x320 model): ``prepare`` letterboxes the frames
of each size into that size's tensor, and a batch with frames of several sizes is a tuple of tensors, one per
size in the order the sizes first appear, which ``forward`` runs one after the other and ``finish`` decodes
back in the frames' order. ``preprocess`` always letterboxes to the model's own size (calibration, benchmarks).
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Collection, Hashable, Sequence
from typing import TypeAlias

import numpy as np

from agent.config.models import ModelConfig
from agent.core.detections import Detection, PrefilterResult
from agent.core.picture import Picture
from agent.errors import ModelError
from agent.prefilter.letterbox import (
    Letterbox,
    boxes_to_source,
    letterbox_to_tensor,
    plan_letterbox,
    window_to_tensor,
)
from agent.prefilter.model_info import (
    ModelInfo,
    check_detector_layout,
    file_digest,
    load_metadata,
)
from agent.prefilter.onnx_session import InferenceSessionLike, open_session
from agent.prefilter.sized_sessions import SizedSessions
from agent.prefilter.yolo_decode import decode_yolov8

Tensors: TypeAlias = np.ndarray | tuple[np.ndarray, ...]  # one batch tensor, or one per input size
Image: TypeAlias = np.ndarray | Picture  # a BGR image, or a frame's picture (asked for the letterbox's size)


class InputBuffer:
    """A preallocated model input, ``tensor`` (batch, 3, H, W) float32, and the letterbox plan whose grey
    border each slot holds (painted again only when a slot gets a frame of another size); with several input
    sizes (``model.input_size: auto``) one such tensor per size, made on first use."""

    def __init__(self, batch: int, height: int, width: int) -> None:
        self.tensor = np.empty((batch, 3, height, width), np.float32)  # pages are touched only when used
        self.painted: list[Letterbox | None] = [None] * batch
        self._sized = {(height, width): (self.tensor, self.painted)}

    def at(self, height: int, width: int) -> tuple[np.ndarray, list[Letterbox | None]]:
        """The tensor and painted plans for input size ``height`` x ``width``."""
        found = self._sized.get((height, width))
        if found is None:
            batch = len(self.painted)
            found = self._sized[(height, width)] = (np.empty((batch, 3, height, width), np.float32), [None] * batch)
        return found


class YoloDetector:
    def __init__(
        self,
        session: InferenceSessionLike,
        info: ModelInfo,
        *,
        min_score: float = 0.05,
        iou_threshold: float = 0.7,
        max_detections: int = 100,
        max_batch: int = 1,
        concurrent_runs: int = 1,
        sizes: SizedSessions | None = None,
    ) -> None:
        self._session: InferenceSessionLike | None = session if sizes is None else None
        self.sizes = sizes  # sessions by input size (model.input_size auto; ``session`` is its own), or None
        self.info = info
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        batch_dim = list(session.get_inputs()[0].shape)[0]
        # a model whose batch dimension is free (see onnx_session.open_session) takes several frames a call
        self.max_batch = max(1, max_batch) if not isinstance(batch_dim, int) else 1
        self.concurrent_runs = max(1, concurrent_runs)  # forward calls the session may run at once
        self._input = self.new_input()
        self._plans: dict[tuple[int, int, int, int], Letterbox] = {}  # (frame w, h, input h, w) -> plan
        self._scratch: dict[tuple[int, int], np.ndarray] = {}  # resized image per letterbox size, reused
        self._run_names = [info.output_name]
        self.takes_pictures = True  # prepare/infer take a frame's Picture (agent.core.ports.PicturePrefilter)

    @property
    def session(self) -> InferenceSessionLike:
        """The session at the model's own input size (with ``input_size: auto`` opened again should no camera's
        frames have needed it)."""
        if self.sizes is not None:
            return self.sizes.native_session()  # type: ignore[no-any-return]
        if self._session is None:
            raise RuntimeError("YoloDetector without a session")  # __init__ keeps one where sizes is None
        return self._session

    @classmethod
    def from_file(cls, path: pathlib.Path, config: ModelConfig | None = None) -> YoloDetector:
        """The detector in ``path`` on ONNX Runtime (``agent.prefilter.open_prefilter`` for every runtime)."""
        config = config or ModelConfig(path=path)
        path = pathlib.Path(path)
        providers, threads, batch = config.providers, config.intra_op_threads, config.max_batch
        size = config.input_size if isinstance(config.input_size, tuple) else None
        session, meta = open_session(path, providers, threads, batch, input_size=size)
        info = describe_model(path, session, meta)

        def opener(fitted: tuple[int, int]) -> InferenceSessionLike:
            return open_session(path, providers, threads, batch, input_size=fitted)[0]  # type: ignore[no-any-return]

        sizes = None
        if config.input_size == "auto":
            sizes = SizedSessions(opener, info.input_h, info.input_w, path.name, native=session)
        return cls(session, info, min_score=config.min_score, iou_threshold=config.iou_threshold,
                   max_detections=config.max_detections, max_batch=config.max_batch,
                   concurrent_runs=config.concurrent_runs, sizes=sizes)

    def new_input(self) -> InputBuffer:
        """A fresh input buffer for ``prepare`` (``max_batch`` slots)."""
        return InputBuffer(self.max_batch, self.info.input_h, self.info.input_w)

    def _plan(self, image: Image, fitted: bool = True, source: Hashable | None = None) \
            -> tuple[Letterbox, np.ndarray | None]:
        w, h = (image.width, image.height) if isinstance(image, Picture) else (image.shape[1], image.shape[0])
        in_h, in_w = self.info.input_h, self.info.input_w
        if fitted and self.sizes is not None:
            in_h, in_w = self.sizes.size_for(w, h, source)  # the camera's size counted, its session open
        plan = self._plans.get((w, h, in_h, in_w))
        if plan is None:
            plan = self._plans[(w, h, in_h, in_w)] = plan_letterbox(w, h, in_w, in_h)
        if (plan.new_w, plan.new_h) == (w, h):
            return plan, None
        scratch = self._scratch.get((plan.new_w, plan.new_h))
        if scratch is None:
            scratch = self._scratch[(plan.new_w, plan.new_h)] = np.empty((plan.new_h, plan.new_w, 3), np.uint8)
        return plan, scratch

    def prepare(self, images: Sequence[Image], buffer: InputBuffer,
                sources: Sequence[Hashable] | None = None) -> tuple[Tensors, list[Letterbox]]:
        """Letterbox ``images`` into the first slots of ``buffer`` (of each input size); returns (the batch
        tensor, or one per input size when the frames run at several, plans). A :class:`Picture` is asked for
        the letterbox's window straight from its decoder (``scaled_bgr``), else its BGR image is resized.
        ``sources``: the camera of each image (``model.input_size: auto`` keeps a size's session open while a
        camera's frames run at it); each tensor returned must then go through ``forward`` once."""
        if not 1 <= len(images) <= len(buffer.painted):
            raise ValueError(f"{len(images)} images for an input buffer of {len(buffer.painted)} slots")
        if sources is not None and len(sources) != len(images):
            raise ValueError(f"{len(sources)} sources for {len(images)} images; expected one camera per image")
        planned = [self._plan(image, source=None if sources is None else sources[i])
                   for i, image in enumerate(images)]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (plan, _scratch) in enumerate(planned):
            groups.setdefault((plan.dst_h, plan.dst_w), []).append(i)
        tensors = []
        for (height, width), members in groups.items():
            tensor, painted = buffer.at(height, width)
            for slot, i in enumerate(members):
                plan, scratch = planned[i]
                _letterbox(images[i], plan, tensor[slot], scratch, painted[slot] is plan)
                painted[slot] = plan
            tensors.append(tensor[:len(members)])
            if self.sizes is not None:
                self.sizes.prepared((height, width))
        return (tensors[0] if len(tensors) == 1 else tuple(tensors)), [plan for plan, _ in planned]

    def retain_sources(self, sources: Collection[Hashable]) -> None:
        """Only ``sources`` are cameras now (a reload removed the others): sizes only the others used are closed."""
        if self.sizes is not None:
            self.sizes.retain(sources)

    def preprocess(self, image: np.ndarray, slot: int = 0) -> tuple[np.ndarray, Letterbox]:
        """Letterbox ``image`` into slot ``slot`` of the reused input tensor at the model's own size; returns
        (that slot as a batch of one, plan)."""
        plan, scratch = self._plan(image, fitted=False)
        buffer = self._input
        letterbox_to_tensor(image, plan, buffer.tensor[slot], scratch, border_painted=buffer.painted[slot] is plan)
        buffer.painted[slot] = plan
        return buffer.tensor[slot:slot + 1], plan

    def forward(self, tensor: Tensors) -> Tensors:
        """The model's output for a batch tensor (or a tuple of them, one output each)."""
        if isinstance(tensor, tuple):
            return tuple(self._forward(t) for t in tensor)
        return self._forward(tensor)

    def _forward(self, tensor: np.ndarray) -> np.ndarray:
        if self.sizes is None:
            return self._run(self.session, tensor)
        size = (int(tensor.shape[2]), int(tensor.shape[3]))
        try:
            return self._run(self.sizes.session(size), tensor)
        finally:
            self.sizes.ran(size)  # the size's session may be closed now, when no camera uses it

    def _run(self, session: InferenceSessionLike, tensor: np.ndarray) -> np.ndarray:
        if len(tensor) > 1 and isinstance(list(session.get_inputs()[0].shape)[0], int):  # no free batch there
            return np.concatenate([self._run(session, tensor[i:i + 1]) for i in range(len(tensor))])
        return np.asarray(session.run(self._run_names, {self.info.input_name: tensor})[0])

    def postprocess(self, output: np.ndarray, plan: Letterbox) -> tuple[Detection, ...]:
        raw = decode_yolov8(output[0], len(self.info.names), min_score=self.min_score,
                            iou_threshold=self.iou_threshold, max_detections=self.max_detections)
        if not raw.scores.size:
            return ()
        boxes = boxes_to_source(raw.boxes, plan).tolist()
        names = self.info.names
        return tuple(
            Detection(label=names[c], class_id=c, confidence=s, box=(b[0], b[1], b[2], b[3]))
            for b, s, c in zip(boxes, raw.scores.tolist(), raw.class_ids.tolist(), strict=True)
        )

    def finish(self, output: Tensors, plans: Sequence[Letterbox], spent_ms: float) -> list[PrefilterResult]:
        """Decode a batch's output (one row per plan; a tuple: one output per input size, in the order the
        plans' sizes first appear); each result's latency is ``spent_ms`` (the time its batch spent in
        preparing and the model) plus the decoding."""
        t0 = time.perf_counter()
        if isinstance(output, tuple):
            group: dict[tuple[int, int], int] = {}
            taken: dict[tuple[int, int], int] = {}
            rows = []
            for plan in plans:
                size = (plan.dst_h, plan.dst_w)
                g, r = group.setdefault(size, len(group)), taken.get(size, 0)
                taken[size] = r + 1
                rows.append(output[g][r:r + 1])
        else:
            rows = [output[i:i + 1] for i in range(len(plans))]
        detections = [self.postprocess(row, plan) for row, plan in zip(rows, plans, strict=True)]
        ms = spent_ms + (time.perf_counter() - t0) * 1000.0
        return [PrefilterResult(self.info.model_id, d, ms) for d in detections]

    def infer(self, image: Image) -> PrefilterResult:
        t0 = time.perf_counter()
        tensor, plans = self.prepare([image], self._input)
        output = self.forward(tensor)
        return self.finish(output, plans, (time.perf_counter() - t0) * 1000.0)[0]

    def infer_batch(self, images: Sequence[Image]) -> list[PrefilterResult]:
        """Several frames (from different cameras) in one session run, ``max_batch`` at a time; each
        result's latency is its batch's (the time the frame waited for its answer)."""
        results: list[PrefilterResult] = []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start:start + self.max_batch]
            if len(chunk) == 1:
                results.append(self.infer(chunk[0]))
                continue
            t0 = time.perf_counter()
            tensor, plans = self.prepare(chunk, self._input)
            output = self.forward(tensor)
            results += self.finish(output, plans, (time.perf_counter() - t0) * 1000.0)
        return results

    def detect(self, image: Image) -> PrefilterResult:
        """The same as :meth:`infer` (the name every prefilter shares)."""
        return self.infer(image)


def _letterbox(image: Image, plan: Letterbox, out: np.ndarray, scratch: np.ndarray | None, painted: bool) -> None:
    """``image`` letterboxed into ``out``: a picture that can scale itself to the window in one pass."""
    if isinstance(image, Picture):
        window = image.scaled_bgr(plan.new_w, plan.new_h) if scratch is not None else None
        if window is not None:
            window_to_tensor(window, plan, out, border_painted=painted)
            return
        image = image.bgr()
    letterbox_to_tensor(image, plan, out, scratch, border_painted=painted)


def describe_model(path: pathlib.Path, session: InferenceSessionLike, meta: dict[str, str]) -> ModelInfo:
    """Work out and check what the model is, from ONNX metadata or a sidecar."""
    where = f"model {path}"
    parsed, source = load_metadata(path, meta)
    task = parsed["task"]
    if task != "detect":
        raise ModelError(f"{where}: task is {task!r}; YoloDetector runs task 'detect' (YOLOv8 output layout); "
                         "open any prefilter model with agent.prefilter.open_prefilter")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{where}: expected 1 input and 1 output (YOLOv8 export without NMS), got "
                         f"{len(inputs)} inputs and {len(outputs)} outputs")
    names: tuple[str, ...] = parsed["names"]
    w, h = check_detector_layout(where, names, list(inputs[0].shape), list(outputs[0].shape), parsed.get("imgsz"))
    return ModelInfo(
        model_id=f"{path.stem}@{file_digest(path)[:12]}", path=path, task=task, names=names,
        input_w=w, input_h=h, input_name=inputs[0].name, output_name=outputs[0].name, metadata_source=source,
    )
