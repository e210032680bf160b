"""The gateway asks about the plant's line (its taxonomy), not the conveyor: a real gateway in front of the
fake Ollama, the recorded request's system prompt, format schema and images; bad inputs; the Modelfile."""

from __future__ import annotations

import base64
import json
import pathlib
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from agent.capture.surface import SURFACE_CLASSES, SurfaceSettings, render_surface
from agent.cli.main import app
from agent.config.taxonomy import load_taxonomy
from agent.errors import ConfigError
from agent.gateway.config import GatewayConfig, load_gateway_config
from agent.gateway.question import load_inspection
from agent.gateway.templates import answer_schema
from agent.wire import escalation_pb2 as pb
from agent.wire import escalation_pb2_grpc as pb_grpc
from tests.escalation import samples
from tests.fakes.gateway_fixtures import StartGateway
from tests.fakes.ollama import FakeOllama
from tests.gateway.test_modelfile import DIRECTIVES, PARAMETERS, parse

LABELS = ("SURFACE_SCRATCH", "PIT", "STAIN", "CRACK", "INCLUSION", "DENT")
DESCRIPTIONS = {
    "scratch": "a thin long line, lighter or darker than the surface",
    "pit": "a cluster of tiny dark holes",
    "stain": "a soft blot of another tone",
    "crack": "a jagged dark branching line",
    "inclusion": "a broken dark streak along the rolling direction",
    "dent": "a shallow hollow, lit from one side",
}
PART = "a grey steel sheet, seen from above by a mono camera"
GOOD = "an even grey texture (rolling streaks or fine machining marks) with no marks, holes or blots"


def surface_taxonomy(folder: pathlib.Path, *, reference: str | None = "good.jpg", line: bool = True) -> pathlib.Path:
    """A taxonomy of the surface scene's six classes (agent.capture.surface) with a line section; a JPEG of
    a defect-free surface frame as the reference image when ``reference`` names one."""
    entries = [{"label": label, "code": f"S-{i + 1}", "severity": "medium", "description": DESCRIPTIONS[word],
                "synonyms": [word]} for i, (label, word) in enumerate(zip(LABELS, SURFACE_CLASSES, strict=True))]
    doc: dict[str, Any] = {"version": 1, "labels": entries}
    if line:
        doc["line"] = {"part": PART, "good": GOOD, **({"reference_image": reference} if reference else {})}
    if reference == "good.jpg":
        image, truth = render_surface(np.random.default_rng(7), SurfaceSettings(width=320, height=320,
                                                                                  defect_rate=0.0))
        assert not truth.defects
        ok, data = cv2.imencode(".jpg", image)
        assert ok
        (folder / "good.jpg").write_bytes(data.tobytes())
    path = folder / "taxonomy.yaml"
    path.write_text(json.dumps(doc), encoding="utf-8")  # JSON is YAML
    return path


def answer(defect_type: str) -> str:
    return json.dumps({"verdict": "defect", "tags": [{"label": "pit", "confidence": 0.8}],
                       "defects": [{"type": defect_type, "location": "centre", "severity": "medium"}],
                       "description": "A cluster of tiny dark holes near the centre."})


def test_the_question_names_the_line_its_defects_and_sends_the_reference_image(
        tmp_path: pathlib.Path, fake_ollama: FakeOllama, start_gateway: StartGateway,
        channels: Any) -> None:
    taxonomy = surface_taxonomy(tmp_path)
    gw = start_gateway(taxonomy=str(taxonomy))
    fake_ollama.script(answer("PIT"))
    stub = pb_grpc.EscalationStub(channels(gw.address))
    crop = pb.Crop(image=samples.jpeg(64, 48), box=pb.Box(x1=1, y1=2, x2=65, y2=50), label="pit", confidence=0.4)
    reply = stub.Describe(samples.request(crops=[crop]), timeout=10)

    assert [(d.type, d.location) for d in reply.defects] == [("PIT", "centre")] and not fake_ollama.unfaithful
    (chat,) = fake_ollama.chat_requests()
    body = chat.body
    assert body["format"] == answer_schema((*LABELS, "other"))  # the enum is the taxonomy's labels
    system, user = body["messages"]
    assert "conveyor" not in system["content"] and PART in system["content"] and GOOD in system["content"]
    assert "only with one JSON object" in system["content"]
    for label, word in zip(LABELS, SURFACE_CLASSES, strict=True):
        also = "" if label.casefold() == word else f" (also called {word})"
        assert f'- "{label}": {DESCRIPTIONS[word]}{also}' in user["content"]
    reference = (tmp_path / "good.jpg").read_bytes()
    assert [base64.b64decode(i) for i in user["images"]] == [samples.jpeg(), reference, samples.jpeg(64, 48)]
    assert "The second image is a reference photo of a good part" in user["content"]
    assert "close-up 1: pit (confidence 0.40) at 1,2,65,50" in user["content"]
    # the agent side: every word the answer may use maps through the same taxonomy
    mapped = load_taxonomy(taxonomy).map(reply.defects[0].type)
    assert mapped is not None and (mapped.canonical, mapped.code) == ("PIT", "S-2")


def test_without_a_line_section_or_reference_the_labels_still_make_the_question(
        tmp_path: pathlib.Path, fake_ollama: FakeOllama, start_gateway: StartGateway, channels: Any) -> None:
    gw = start_gateway(taxonomy=str(surface_taxonomy(tmp_path, reference=None, line=False)))
    fake_ollama.script(answer("CRACK"))
    reply = pb_grpc.EscalationStub(channels(gw.address)).Describe(samples.request(), timeout=10)
    assert reply.defects[0].type == "CRACK"
    system, user = fake_ollama.chat_requests()[0].body["messages"]
    assert "parts on a production line" in system["content"] and "conveyor" not in system["content"]
    assert len(user["images"]) == 1 and "reference" not in user["content"]


def test_the_conveyor_question_stays_the_default(fake_ollama: FakeOllama, start_gateway: StartGateway,
                                                 channels: Any) -> None:
    gw = start_gateway()
    pb_grpc.EscalationStub(channels(gw.address)).Describe(samples.request(), timeout=10)
    body = fake_ollama.chat_requests()[0].body
    system, user = body["messages"]
    assert "parts on a conveyor belt" in system["content"]
    assert "for these defect types: scratch, hole, stain, missing." in user["content"]
    assert body["format"] == answer_schema(("scratch", "hole", "stain", "missing", "other"))
    assert len(user["images"]) == 1


@pytest.mark.parametrize(("image_tokens", "images", "note"), [
    (1000, 2, "1 of 1 crop(s) left out"),  # frame and reference fit (about 900 tokens of text, 512 for the answer)
    (1800, 1, "1 of 1 crop(s) and the reference image of a good part left out"),  # only the frame fits
])
def test_the_reference_image_counts_against_the_context_and_goes_after_the_crops(
        tmp_path: pathlib.Path, fake_ollama: FakeOllama, start_gateway: StartGateway, channels: Any,
        image_tokens: int, images: int, note: str) -> None:
    gw = start_gateway(taxonomy=str(surface_taxonomy(tmp_path)), ollama={"image_tokens": image_tokens})
    fake_ollama.script(answer("DENT"))
    crop = pb.Crop(image=samples.jpeg(64, 48), label="dent", confidence=0.4)
    reply = pb_grpc.EscalationStub(channels(gw.address)).Describe(samples.request(crops=[crop]), timeout=10)
    user = fake_ollama.chat_requests()[0].body["messages"][1]
    assert len(user["images"]) == images and base64.b64decode(user["images"][0]) == samples.jpeg()
    assert ("reference photo" in user["content"]) == (images == 2) and "close-up" not in user["content"]
    assert len(reply.notes) == 1 and reply.notes[0].startswith(note)


# -- bad inputs -------------------------------------------------------------------------------


def problems_of(config: GatewayConfig) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_inspection(config)
    return info.value.problems


def test_a_missing_taxonomy_file_is_named(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert problems_of(GatewayConfig(taxonomy=missing)) == [
        f"taxonomy ({missing}): {missing}: no such taxonomy file"]


def test_a_bad_reference_image_is_named(tmp_path: pathlib.Path) -> None:
    taxonomy = surface_taxonomy(tmp_path, reference="good.png")
    (tmp_path / "good.png").write_text("not an image", encoding="utf-8")
    (problem,) = problems_of(GatewayConfig(taxonomy=taxonomy))
    assert problem.startswith(f"taxonomy ({taxonomy}): line.reference_image: {tmp_path / 'good.png'} is not JPEG "
                              "or PNG") and "expected a JPEG" in problem
    (tmp_path / "good.png").write_bytes(samples.jpeg()[:-200])  # a truncated JPEG
    (problem,) = problems_of(GatewayConfig(taxonomy=taxonomy))
    assert "line.reference_image" in problem and "truncated JPEG" in problem
    (tmp_path / "good.png").unlink()
    (problem,) = problems_of(GatewayConfig(taxonomy=taxonomy))
    assert problem == (f"taxonomy ({taxonomy}): line.reference_image: {tmp_path / 'good.png'}: no such file; "
                       "expected a JPEG or PNG photo of a good part")


def test_defect_classes_that_clash_with_the_taxonomy_are_a_config_error(tmp_path: pathlib.Path) -> None:
    taxonomy = surface_taxonomy(tmp_path, reference=None)
    assert problems_of(GatewayConfig(taxonomy=taxonomy, defect_classes=["scratch", "hole", "pit"])) == [
        f"defect_classes ['hole'] are not labels or synonyms of the taxonomy ({taxonomy}); with a taxonomy the "
        "question names its labels: remove defect_classes, or add the words to the taxonomy"]
    # words the taxonomy maps are no clash; the question still names the taxonomy's labels
    inspection = load_inspection(GatewayConfig(taxonomy=taxonomy, defect_classes=["scratch", "Pit"]))
    assert inspection.defect_types == (*LABELS, "other")


def test_the_gateway_command_names_the_problem_and_exits_2(tmp_path: pathlib.Path) -> None:
    (tmp_path / "gateway.yaml").write_text("listen: 127.0.0.1:0\ntaxonomy: missing.yaml\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["gateway", "-c", str(tmp_path / "gateway.yaml")])
    assert result.exit_code == 2, result.output
    assert f"taxonomy ({tmp_path / 'missing.yaml'}): {tmp_path / 'missing.yaml'}: no such taxonomy file" \
        in result.output and "Traceback" not in result.output


def test_relative_paths_follow_their_files(tmp_path: pathlib.Path) -> None:
    (tmp_path / "plant").mkdir()
    surface_taxonomy(tmp_path / "plant")
    (tmp_path / "gateway.yaml").write_text("taxonomy: plant/taxonomy.yaml\n", encoding="utf-8")
    config = load_gateway_config(tmp_path / "gateway.yaml", env={})
    assert config.taxonomy == tmp_path / "plant" / "taxonomy.yaml"
    assert load_inspection(config).reference == (tmp_path / "plant" / "good.jpg").read_bytes()


# -- the Modelfile ----------------------------------------------------------------------------


def test_a_modelfile_from_the_taxonomy(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "Modelfile"
    result = CliRunner().invoke(app, ["gateway-modelfile", "--taxonomy", str(surface_taxonomy(tmp_path)),
                                      "--from", "llava:13b", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"ollama create edge-inspector -f {out}" in result.output
    commands = parse(out.read_text(encoding="utf-8"))
    assert all(directive in DIRECTIVES for directive, _ in commands) and commands[0] == ("FROM", "llava:13b")
    params = dict(argument.partition(" ")[::2] for directive, argument in commands if directive == "PARAMETER")
    assert set(params) <= PARAMETERS and float(params["temperature"]) <= 0.2
    assert params["num_ctx"] == "6144"  # room for the reference image
    system = dict(commands)["SYSTEM"]
    assert PART in system and GOOD in system and "conveyor" not in system
    assert all(f'"{label}"' in system for label in LABELS) and '"other"' in system


def test_the_modelfile_command_refuses_bad_input(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(app, ["gateway-modelfile", "--taxonomy", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "no such taxonomy file" in result.output
    result = CliRunner().invoke(app, ["gateway-modelfile", "--from", "llava 7b", "--out", str(tmp_path / "M")])
    assert result.exit_code == 2 and "--from 'llava 7b' is not an Ollama model name" in result.output
    assert not list(tmp_path.iterdir())  # nothing half-written
    conveyor = CliRunner().invoke(app, ["gateway-modelfile"])
    assert conveyor.exit_code == 0 and "parts on a conveyor belt" in conveyor.output
    assert "PARAMETER num_ctx 4096" in conveyor.output

