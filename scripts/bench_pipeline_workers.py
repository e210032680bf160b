"""The worker processes of ``scripts/bench_pipeline.py``: each side of the comparison runs in a process of
its own (``bench_pipeline.py --worker KIND``) and prints one JSON line with what it measured."""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import tempfile
import threading
import time
from typing import Any

import numpy as np


def rate(stamps: list[float], warmup: int) -> float:
    """Frames per second from the completion times of consecutive frames, after ``warmup`` frames."""
    if len(stamps) < warmup + 2:
        raise SystemExit(f"only {len(stamps)} frames were timed; need more than {warmup + 1} (raise --frames)")
    return (len(stamps) - 1 - warmup) / (stamps[-1] - stamps[warmup])


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) of every live thread of this process, by Python thread name (threads
    Python did not start, e.g. onnxruntime's pool, are ``native``)."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in pathlib.Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            stat = (task / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            name = names.get(int(task.name), "native")
            name = "grab" if name.startswith("grab-") else name
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_per_frame(marks: list[dict[str, float]], frames: int) -> dict[str, float]:
    if len(marks) != 2:
        return {}
    return {name: (marks[1][name] - marks[0].get(name, 0.0)) * 1000.0 / frames for name in sorted(marks[1])
            if marks[1][name] > marks[0].get(name, 0.0)}


def rss_mb(field: str = "VmHWM") -> float:
    """This process's resident memory: ``VmHWM`` the peak so far (the kernel's high-water mark), ``VmRSS`` now."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------- workers
# Each runs in its own process (``--worker KIND``) and prints one JSON line.


def worker_bare(args: argparse.Namespace) -> dict[str, Any]:
    import cv2

    from agent.config.models import ModelConfig
    from agent.prefilter.factory import open_prefilter

    model = open_prefilter(args.model, ModelConfig(path=args.model, intra_op_threads=args.threads,
                                                   concurrent_runs=args.runs, runtime=args.runtime,
                                                   precision=side_precision(args)))
    cap = cv2.VideoCapture(str(args.video), cv2.CAP_FFMPEG)
    tensors = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        # decoded and letterboxed beforehand, at the input size the agent runs this frame at (model.input_size
        # auto: a 1280x960 frame at 256x320), so the loops run the same model calls as the agent
        tensor, _plans = model.prepare([image], model.new_input())
        tensors.append(tensor.copy())
    cap.release()
    forward = model.forward  # the session of the tensor's input size, then session.run
    stamps: list[float] = []

    def loop(mine: list[np.ndarray]) -> None:
        for tensor in mine:
            forward(tensor)
            stamps.append(time.perf_counter())

    # --runs R: R loops at once on the one session, each over every R-th frame
    loops = [threading.Thread(target=loop, args=(tensors[k::args.runs],)) for k in range(args.runs)]
    for t in loops:
        t.start()
    for t in loops:
        t.join()
    return {"fps": rate(sorted(stamps), args.warmup), "frames": len(stamps),
            "runs_on": model.session.get_providers()[0]}


def worker_agent(args: argparse.Namespace) -> dict[str, Any]:
    from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, ModelConfig, MqttConfig, OutboxConfig
    from agent.core.inspection import Inspection
    from agent.runtime.service import AgentService

    stamps: list[float] = []
    boxes: dict[int, list[list[float]]] = {}
    one_camera = args.cameras == 1
    rss_now: list[float] = []
    cpu_marks: list[dict[str, float]] = []  # thread CPU times at the start and near the end of the timed part
    marks = (args.warmup * args.cameras, (args.frames - 10) * args.cameras)

    def on_inspection(ins: Inspection) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) in marks:
            cpu_marks.append(thread_cpu_seconds())
            rss_now.append(rss_mb("VmRSS"))
        if one_camera:
            boxes[ins.frame.sequence] = [[*d.box, d.class_id, d.confidence] for d in ins.result.detections]

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-agent-") as tmp:
        config = AgentConfig(
            device_id="bench", cameras=[CameraConfig(id=f"cam{i + 1}", source=str(args.video), realtime=False)
                                        for i in range(args.cameras)],
            model=ModelConfig(path=args.model, intra_op_threads=args.threads, concurrent_runs=args.runs,
                              runtime=args.runtime, precision=side_precision(args)),
            mqtt=MqttConfig(url=args.broker, stats_interval_s=0), outbox=OutboxConfig(path=pathlib.Path(tmp) / "o.db"),
            metrics=MetricsConfig(enabled=False))
        service = AgentService(config, on_inspection=on_inspection)
        service.start()
        if not service.publisher.wait_connected(10.0):
            raise SystemExit(f"the agent did not connect to the broker at {args.broker}")
        service.wait(threading.Event())  # until every camera's video ended
        summary = service.shutdown(timeout=30.0)
        runs_on = service.model_facts.providers[0] if service.model_facts and service.model_facts.providers else "?"
    inspected = sum(summary.inspected.values())
    acked = int(summary.publisher.acked)
    if acked != inspected:
        raise SystemExit(f"the broker acknowledged {acked} of {inspected} events")
    return {"fps": rate(stamps, args.warmup * args.cameras), "frames": inspected, "acked": acked,
            "rss_peak_mb": rss_mb(), "rss_running_mb": max(rss_now, default=float("nan")),
            "cpu_ms_per_frame": cpu_per_frame(cpu_marks, marks[1] - marks[0]), "runs_on": runs_on,
            "boxes": {str(k): v for k, v in boxes.items()}}


def worker_ultralytics(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="bench-pipeline-yolo-")
    from ultralytics import YOLO

    from agent.config.models import ModelConfig

    defaults = ModelConfig()
    model = YOLO(str(args.model), task="detect")
    stamps: list[float] = []
    boxes: dict[int, list[list[float]]] = {}
    results = model.predict(source=str(args.video), stream=True, imgsz=args.imgsz, conf=defaults.min_score,
                            iou=defaults.iou_threshold, max_det=defaults.max_detections, device="cpu",
                            verbose=False, project=os.environ["YOLO_CONFIG_DIR"])
    for index, result in enumerate(results, start=1):
        stamps.append(time.perf_counter())
        b = result.boxes
        boxes[index] = [[*map(float, xyxy), int(c), float(s)] for xyxy, c, s in
                        zip(b.xyxy.numpy(), b.cls.numpy(), b.conf.numpy(), strict=True)]
    out = {"fps": rate(stamps, args.warmup), "frames": len(stamps), "boxes": {str(k): v for k, v in boxes.items()}}
    if args.runtime == "openvino":
        out["runs_on"] = ultralytics_ov_precision(model, args.model)
    return out


def ultralytics_ov_precision(model: Any, folder: pathlib.Path) -> str:
    """What the float layers of ultralytics' OpenVINO predictor ran in: its compiled model's
    INFERENCE_PRECISION_HINT (ultralytics sets none on x86, so the CPU plugin's default: bf16 on a CPU with
    AVX512_BF16 or AMX); where its backend does not show the compiled model, the same IR compiled as it does."""
    import openvino

    from agent.prefilter.openvino_session import openvino_version, precision_name

    backend = getattr(getattr(getattr(model, "predictor", None), "model", None), "backend", None)
    compiled = getattr(backend, "ov_compiled_model", None)
    how = "its compiled model"
    if compiled is None:
        xml = next(pathlib.Path(folder).glob("*.xml"))
        compiled = openvino.Core().compile_model(str(xml), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        how = "the IR compiled with its properties"
    hint = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return f"OpenVINO {openvino_version()} CPU ({hint}; {how})"


def side_precision(args: argparse.Namespace) -> str:
    """``--precision`` (model.precision) for the OpenVINO sides; the ONNX Runtime sides keep auto."""
    return str(args.precision) if args.runtime == "openvino" else "auto"


def worker_breakdown(args: argparse.Namespace) -> dict[str, Any]:
    """One thread, one frame at a time through every stage the agent runs, each timed."""
    import datetime

    import cv2

    from agent.config.models import AgentConfig, CameraConfig, ModelConfig, MqttConfig, OutboxConfig
    from agent.core.detections import PrefilterResult
    from agent.core.frame import Frame
    from agent.prefilter.factory import open_prefilter
    from agent.runtime.building import build_publisher
    from agent.runtime.inspector import FrameInspector

    stages = ("grab", "retrieve", "preprocess", "session.run", "postprocess", "triage+event", "outbox+mqtt")
    times: dict[str, list[float]] = {s: [] for s in stages}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-stages-") as tmp:
        config = AgentConfig(device_id="bench", cameras=[CameraConfig(id="cam1", source=str(args.video))],
                             model=ModelConfig(path=args.model, intra_op_threads=args.threads,
                                               concurrent_runs=1, runtime=args.runtime),
                             mqtt=MqttConfig(url=args.broker), outbox=OutboxConfig(path=pathlib.Path(tmp) / "o.db"))
        model = open_prefilter(args.model, config.model)
        inspector = FrameInspector(config, model)
        publisher = build_publisher(config)
        publisher.start()
        publisher.wait_connected(10.0)
        cap = cv2.VideoCapture(str(args.video), cv2.CAP_FFMPEG)
        sequence = 0
        while True:
            tg = time.perf_counter()
            ok = cap.grab()  # FFmpeg reads and decodes the packet here ...
            t0 = time.perf_counter()
            ok, image = cap.retrieve() if ok else (False, None)  # ... and converts the picture to BGR here
            t1 = time.perf_counter()
            if not ok:
                break
            sequence += 1
            tensor, plan = model.preprocess(image)
            t2 = time.perf_counter()
            output = model.forward(tensor)
            t3 = time.perf_counter()
            detections = model.postprocess(output, plan)
            t4 = time.perf_counter()
            frame = Frame("cam1", sequence, datetime.datetime.now(datetime.timezone.utc), time.monotonic(), image)
            inspection = inspector._inspection(frame, PrefilterResult(model.info.model_id, detections, 1.0))
            t5 = time.perf_counter()
            publisher.publish_event(inspection.event)
            t6 = time.perf_counter()
            if sequence > args.warmup:
                for stage, a, b in zip(stages, (tg, t0, t1, t2, t3, t4, t5), (t0, t1, t2, t3, t4, t5, t6),
                                       strict=True):
                    times[stage].append((b - a) * 1000.0)
        cap.release()
        publisher.flush(10.0)
        publisher.stop(5.0)
    return {"ms": {s: float(np.median(v)) for s, v in times.items()},
            "mean_ms": {s: float(np.mean(v)) for s, v in times.items()}, "frames": sequence}


def worker_export_ov(args: argparse.Namespace) -> dict[str, Any]:
    """ultralytics' OpenVINO exports of the FP32 file's weights (``--model``), into ``--out``: FP32, and INT8
    (NNCF, calibrated on a local synthetic dataset; ``data=``, never a download). Reused when already there."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="bench-pipeline-yolo-")
    out = pathlib.Path(args.out)
    fp32, int8 = out / "init_openvino_model", out / "init_int8_openvino_model"
    done: dict[str, Any] = {"fp32": str(fp32) if (fp32 / "init.xml").is_file() else None,
                            "int8": str(int8) if (int8 / "init.xml").is_file() else None}
    if done["fp32"] and done["int8"]:
        return done
    from ultralytics import YOLO

    from agent.capture.synthetic import ConveyorScene
    from agent.prefilter.factory import open_prefilter
    from agent.tooling.dataset.synth import write_synthetic_dataset
    from agent.tooling.training.onnx_to_yolo import yolo_from_onnx

    out.mkdir(parents=True, exist_ok=True)
    det = open_prefilter(args.model)
    scene = ConveyorScene(seed=11)
    images = [det.preprocess(scene.next_frame()[0])[0].copy() for _ in range(8)]
    checkpoint, _rebuilt = yolo_from_onnx(args.model, len(det.info.names), out, images, tolerance=1e-3)
    model = YOLO(str(checkpoint), task="detect")
    done["fp32"] = str(model.export(format="openvino", imgsz=args.imgsz, device="cpu"))
    try:
        data = out / "calib"
        if not (data / "data.yaml").is_file():
            write_synthetic_dataset(data, 40, 40, seed=5)
        done["int8"] = str(YOLO(str(checkpoint), task="detect").export(
            format="openvino", imgsz=args.imgsz, int8=True, data=str(data / "data.yaml"), device="cpu"))
    except Exception as exc:  # noqa: BLE001 - reported in the bench's output: the INT8 side is then left out
        done["int8_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return done


WORKERS = {"bare": worker_bare, "agent": worker_agent, "ultralytics": worker_ultralytics,
           "breakdown": worker_breakdown, "export_ov": worker_export_ov}
