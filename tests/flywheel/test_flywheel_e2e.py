"""The data flywheel end to end, on the synthetic scene: a weak detector runs in the agent, the VLM (the fake
Ollama answering from the ground truth) labels the frames it was unsure about, the recorder keeps them,
`edge-agent dataset export` turns them into a YOLO dataset, `edge-agent models train` fine-tunes the weak
model on it, `edge-agent models promote` checks it on held-out data and swaps it in; the promoted model is
better on held-out data and the agent escalates fewer frames with it.

The weak starting detector is made in the test, deliberately: the shipped detector fine-tuned for one
epoch on 160 images whose *stain* labels were deleted (stains taught as background), with ultralytics'
default warm-up, whose bias learning rate of 0.1 wrecks a fine-tune (the reason `edge-agent models train`
sets it to lr0). Held-out mAP50 drops from the shipped 0.93 to about 0.77; it still finds stains, but with
low confidence (its stain recall at its best-F1 threshold is 0), and it is unsure about many frames (about
40% escalated with the default band). The label rule (agent/tooling/dataset/labels.py) turns the boxes the VLM
confirms into training labels.

The camera is a real MJPG video of independent synthetic stills (one part each), so consecutive frames are
not near-copies and the export may split frame by frame (``--split-gap 0``); the held-out set is
``write_synthetic_dataset``'s val split for seed 7 (rendered from seed 8: the held-out set of the shipped
model's card), never seen in training. Everything else is real: Mosquitto, the gRPC gateway, ONNX Runtime,
ultralytics training, the INT8 gate. About 3 to 4 minutes on a 2-core box; needs the train extra.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable

import cv2
import pytest
import yaml

from agent.capture.synthetic import DEFECT_CLASSES
from agent.config.models import DEFAULT_MODEL, AgentConfig, ModelConfig
from agent.prefilter.detector import YoloDetector
from agent.publish.local_broker import LocalMosquitto
from agent.runtime.service import AgentService
from agent.tooling.dataset.synth import write_synthetic_dataset
from agent.tooling.evaluation.dataset import evaluate_detector, read_yolo_dataset
from tests.conftest import MqttCollector
from tests.fakes.gateway import GatewayThread, gateway_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.vlm_oracle import TruthOracle

pytestmark = [pytest.mark.slow, pytest.mark.train, pytest.mark.timeout(1500)]

STAIN = DEFECT_CLASSES.index("stain")
CAMERA_IMAGES = 400  # frames of each camera video
MAP50_GAIN = 0.05  # the promoted model's held-out mAP50 is at least this much above the weak model's
ESCALATION_DROP = 0.03  # the agent escalates at least this share of frames less with the promoted model


def edge_agent(*args: str, cwd: pathlib.Path, ok: tuple[int, ...] = (0,)) -> str:
    """Run the real CLI; its output, or a failure showing it."""
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(cwd / "yolo-config")}
    done = subprocess.run([sys.executable, "-m", "agent.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode in ok, f"edge-agent {' '.join(args)} -> exit {done.returncode}\n{out[-4000:]}"
    return out


def stills_video(root: pathlib.Path, seed: int) -> tuple[pathlib.Path, TruthOracle]:
    """A video of CAMERA_IMAGES synthetic stills and the oracle that knows what is in each."""
    write_synthetic_dataset(root, CAMERA_IMAGES, 1, seed=seed)
    images = []
    for path in sorted((root / "images" / "train").iterdir()):
        image = cv2.imread(str(path))
        assert image is not None, path
        images.append(image)
    height, width = images[0].shape[:2]
    video = root / "camera.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (width, height))
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi files here"
    for image in images:
        writer.write(image)
    writer.release()
    oracle = TruthOracle.from_yolo(root / "images" / "train", root / "labels" / "train", DEFECT_CLASSES)
    return video, oracle


def held_out_map50(model: pathlib.Path, held_out: pathlib.Path) -> float:
    """mAP50 on the held-out split, scored as `edge-agent models eval` (and ultralytics val) score it."""
    detector = YoloDetector.from_file(model, ModelConfig(path=model, min_score=0.001, iou_threshold=0.7,
                                                          max_detections=300))
    dataset = read_yolo_dataset(held_out / "data.yaml", "val", names=detector.info.names)
    return evaluate_detector(detector, dataset, detector.info.names).map50


def run_agent(config_file: pathlib.Path, video: pathlib.Path, broker: LocalMosquitto,
              collector: Callable[..., MqttCollector], record: bool) -> dict[str, int]:
    """The agent over ``video`` with the config file's model; escalation statuses of its events."""
    doc = yaml.safe_load(config_file.read_text())  # every path in it is absolute
    doc["cameras"] = [{"id": "belt", "source": str(video), "record": record}]
    config = AgentConfig.model_validate(doc)
    sub = collector(broker.url, "edge/box1/belt/tags")
    service = AgentService(config)
    service.start()
    assert service.publisher.wait_connected(10.0)
    service.wait(threading.Event(), duration=240.0)
    summary = service.shutdown(timeout=30.0)
    assert sum(summary.inspected.values()) == CAMERA_IMAGES
    docs = [json.loads(m.payload) for m in sub.wait_for(CAMERA_IMAGES, timeout=30.0)]
    first = {d["event_id"]: d for d in docs if d["revision"] == 1}
    assert len(first) == CAMERA_IMAGES
    return dict(collections.Counter(d["escalation"]["status"] for d in first.values()))


def weakened_detector(shipped: pathlib.Path, work: pathlib.Path) -> pathlib.Path:
    """The shipped detector after one careless epoch that taught stains as background (see the module doc)."""
    from ultralytics import YOLO

    from agent.tooling.training.onnx_to_yolo import yolo_from_onnx

    data = work / "data"
    write_synthetic_dataset(data, 160, 40, seed=11)
    for label in (data / "labels").rglob("*.txt"):
        kept = [line for line in label.read_text().splitlines() if line.strip() and int(line.split()[0]) != STAIN]
        label.write_text("".join(line + "\n" for line in kept))
    detector = YoloDetector.from_file(shipped)
    images = []
    for path in sorted((data / "images" / "train").iterdir())[:64]:
        image = cv2.imread(str(path))
        assert image is not None, path
        images.append(detector.preprocess(image)[0].copy())
    checkpoint, _rebuilt = yolo_from_onnx(shipped, len(DEFECT_CLASSES), work, images, 1e-3)
    # ultralytics' training and torch's legacy ONNX exporter (tracer, deprecations) warn; pytest makes warnings
    # errors, and one raised inside the tracer breaks the export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        YOLO(str(checkpoint), task="detect").train(
            data=str(data / "data.yaml"), epochs=1, imgsz=320, batch=16, seed=0, deterministic=True, device="cpu",
            workers=0, amp=False, plots=False, pretrained=True, project=str(work), name="run", exist_ok=True,
            verbose=False, close_mosaic=1, lr0=1e-3, optimizer="AdamW", val=False)
        return pathlib.Path(YOLO(str(work / "run" / "weights" / "last.pt")).export(
            format="onnx", imgsz=320, simplify=True, device="cpu"))


def escalated_share(statuses: dict[str, int]) -> float:
    return 1.0 - statuses.get("not_needed", 0) / sum(statuses.values())


def test_vlm_answers_retrain_the_prefilter_and_the_promoted_model_is_better_and_escalates_less(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], tmp_path: pathlib.Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # offline, and its settings file in the test's folder, before ultralytics is imported
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo-config"))
    pytest.importorskip("ultralytics", reason="needs the train extra: pip install -e '.[train]'")
    repo = pathlib.Path(__file__).resolve().parents[2]
    workdir = tmp_path

    # the deliberately weak starting detector (see the module doc)
    models = workdir / "models"
    models.mkdir()
    running = models / "conveyor-yolov8n.onnx"
    running.write_bytes(weakened_detector(repo / DEFAULT_MODEL, workdir / "weaken").read_bytes())

    held_out = workdir / "held-out"
    write_synthetic_dataset(held_out, 1, 150, seed=7)
    weak_map50 = held_out_map50(running, held_out)

    with FakeOllama() as fake:
        oracles: dict[int, TruthOracle] = {}
        videos = {}
        for seed in (21, 23):  # the recorded camera run; a fresh one to compare escalation rates on
            videos[seed], oracles[seed] = stills_video(workdir / f"camera-{seed}", seed)
        with GatewayThread(gateway_config(fake.url)) as gateway:
            config_file = workdir / "agent.yaml"
            config_file.write_text(yaml.safe_dump({
                "device_id": "box1", "cameras": [{"id": "belt", "source": str(videos[21])}],
                "model": {"path": str(running)},
                "mqtt": {"url": mosquitto.url, "stats_interval_s": 0}, "metrics": {"enabled": False},
                "escalation": {"gateway": gateway.address, "rate_per_camera": {"per_minute": 60_000, "burst": 1000},
                               "dedupe": {"enabled": False}},
                "dataset": {"dir": str(workdir / "recording"), "confident_sample": 0.1}}))

            # 1. the weak model in the agent: record the frames the VLM answered
            fake.answer_fn = oracles[21]
            recorded_run = run_agent(config_file, videos[21], mosquitto, collector, record=True)
            fake.answer_fn = oracles[23]
            weak_fresh = run_agent(config_file, videos[23], mosquitto, collector, record=False)
            print(f"weak model: held-out mAP50 {weak_map50:.3f}; recorded run {recorded_run}; fresh run {weak_fresh}",
                  flush=True)

            # 2. export, 3. retrain, 4. promote (no agent is running between the runs: --no-reload)
            out = edge_agent("dataset", "export", "--from", str(workdir / "recording"), "--out", str(workdir / "data"),
                             "--format", "yolo", "--split-gap", "0", cwd=workdir)
            exported = {split: len(read_yolo_dataset(workdir / "data" / "data.yaml", split).images)
                        for split in ("train", "val")}
            print(f"exported {exported}: {out.strip().splitlines()[-1]}", flush=True)
            assert exported["train"] >= 60 and exported["val"] >= 10, (exported, out)
            edge_agent("models", "train", "--data", str(workdir / "data" / "data.yaml"), "--base", str(running),
                       "--out", str(workdir / "candidate"), "--epochs", "5", "--export-epoch", "last",
                       cwd=workdir, ok=(0, 1))
            promoted = edge_agent("models", "promote", str(workdir / "candidate"), "--config", str(config_file),
                                  "--val", str(held_out / "data.yaml"), "--margin", str(-MAP50_GAIN), "--no-reload",
                                  cwd=workdir)
            promoted_map50 = held_out_map50(running, held_out)
            fake.answer_fn = oracles[23]
            promoted_fresh = run_agent(config_file, videos[23], mosquitto, collector, record=False)

    print(f"held-out mAP50: weak {weak_map50:.3f} -> promoted {promoted_map50:.3f}; escalated on a fresh run: "
          f"weak {escalated_share(weak_fresh):.3f} -> promoted {escalated_share(promoted_fresh):.3f} "
          f"(recorded run {recorded_run}, exported {exported})\n{promoted[-1500:]}")
    assert promoted_map50 >= weak_map50 + MAP50_GAIN, (weak_map50, promoted_map50)
    assert escalated_share(promoted_fresh) <= escalated_share(weak_fresh) - ESCALATION_DROP, \
        (weak_fresh, promoted_fresh)
    # the weak model is kept for rollback
    edge_agent("models", "rollback", "--config", str(config_file), "--no-reload", cwd=workdir)
    assert held_out_map50(running, held_out) == pytest.approx(weak_map50)
