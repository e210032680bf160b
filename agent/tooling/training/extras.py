"""Is the ``train`` extra installed, and ultralytics' offline settings (api-facts §6.6).

Checked with ``importlib.util.find_spec``, which does not import anything: a missing
package is reported before a slow import starts, with the exact command to run.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

from agent.errors import EdgeAgentError

INSTALL = "pip install -e '.[train]'"
# what each task imports, by import name -> the extra's requirement that provides it
NEEDED = {
    "detect": {"torch": "torch", "ultralytics": "ultralytics", "onnx": "onnx", "onnxslim": "onnxslim"},
    "classify": {"torch": "torch", "torchvision": "torchvision", "onnx": "onnx"},
    "anomaly": {"torch": "torch", "onnx": "onnx"},
}


def missing_packages(task: str) -> list[str]:
    """Requirements of the train extra that ``task`` needs and this environment lacks."""
    return [req for module, req in NEEDED[task].items() if importlib.util.find_spec(module) is None]


def require_train_extra(task: str) -> None:
    missing = missing_packages(task)
    if missing:
        what = {"detect": "the detector (ultralytics)", "classify": "the classifier (torch)"}.get(
            task, f"the {task} model (torch)")
        raise EdgeAgentError(f"training {what} needs the train extra, and {', '.join(missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} not installed; run `{INSTALL}` in the "
                             "edge-agent source folder (the runtime agent does not need it)")


def configure_ultralytics(config_dir: pathlib.Path, verbose: bool) -> None:
    """Before ultralytics is first imported: offline (no DNS probes, hub or downloads), its settings in a
    writable folder, and quiet unless ``verbose`` (our own per-epoch lines show progress)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    os.environ["YOLO_VERBOSE"] = "True" if verbose else "False"
