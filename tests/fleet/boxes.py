"""Four camera boxes for fleet tests, each a ``fleet serve`` (:class:`~agent.tooling.fleet.box.BoxServer` with its own
MQTT session to a real Mosquitto) in a thread of the test process, with its own config, model folder and held-out
set. No agent runs on them (``--no-reload``): the rollout is seen on their model files and stores."""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

from agent.config.models import DEFAULT_PREFILTER
from agent.prefilter.model_info import file_digest
from agent.tooling.fleet import wire
from agent.tooling.fleet.box import BoxServer, BoxSettings, serve
from agent.tooling.fleet.bus import FleetBus
from agent.tooling.promote import AgentTarget

KEY = b"0123456789abcdef0123456789abcdef-fleet-test"
DEVICES = ("line3-a", "line3-b", "line3-c", "line3-d")


@dataclasses.dataclass(frozen=True)
class Box:
    device: str
    config: pathlib.Path
    model: pathlib.Path  # model.path

    def files(self) -> dict[str, bytes]:
        """The model folder's files (not the store), name -> bytes."""
        return {p.name: p.read_bytes() for p in self.model.parent.iterdir() if p.is_file()}

    def sha(self) -> str:
        return file_digest(self.model)


def make_box(root: pathlib.Path, device: str, broker_url: str) -> Box:
    folder = root / device
    (folder / "models").mkdir(parents=True)
    shutil.copyfile(DEFAULT_PREFILTER, folder / "models" / "detector.onnx")  # every box runs the shipped INT8 detector
    shutil.copyfile(DEFAULT_PREFILTER.with_suffix(".gate.json"), folder / "models" / "detector.gate.json")
    config = folder / "agent.yaml"
    config.write_text(f"device_id: {device}\nmqtt: {{url: '{broker_url}'}}\nmodel: {{path: models/detector.onnx}}\n"
                      "cameras: [{id: belt, source: 'synthetic://conveyor'}]\n")
    return Box(device, config, folder / "models" / "detector.onnx")


class VanishingBox(BoxServer):
    """A box that answers the first ping, then goes off the broker (its power cut, its network gone)."""

    bus: FleetBus

    def handle(self, payload: bytes, send: Callable[[dict[str, Any]], None], received: float | None = None) -> None:
        super().handle(payload, send, received)
        self.bus.close()


@contextlib.contextmanager
def serving(boxes: list[Box], broker_url: str, val: pathlib.Path, reload: dict[str, bool] | None = None,
            vanish: tuple[str, ...] = ()) -> Iterator[None]:
    """Each box's ``fleet serve`` running until the block ends; ``reload``: the boxes with a running agent (found
    through its pid file, as ``models promote`` finds it), the others only have their files replaced; ``vanish``:
    boxes that go away after the first command."""
    stop = threading.Event()
    buses: list[FleetBus] = []
    threads = []
    try:
        for box in boxes:
            bus = FleetBus(broker_url, f"fleet-serve-{box.device}")
            bus.open([wire.command_topic("edge", box.device)])
            buses.append(bus)
            target = AgentTarget(reload=(reload or {}).get(box.device, False))
            settings = BoxSettings(config=box.config, val=val, key=KEY, target=target, threads=1)
            server = (VanishingBox if box.device in vanish else BoxServer)(settings, box.device, box.model)
            server.bus = bus  # type: ignore[attr-defined]  # used by VanishingBox only
            t = threading.Thread(target=serve, args=(server, bus, "edge", stop), name=f"serve-{box.device}",
                                 daemon=True)
            t.start()
            threads.append(t)
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for bus in buses:
            bus.close()
