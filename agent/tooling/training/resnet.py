"""The frame classifier's network (ResNet-18 layout at a reduced width), its data preparation, one
training epoch, and its ONNX export: shared by scripts/train_classifier.py (training from scratch) and
``edge-agent models train`` (fine-tuning). Needs torch and torchvision (the train extra), imported inside
the functions.

Frames are prepared exactly as the runtime prepares them (``agent.prefilter.classify_input``): resized
to the input (stretch, letterbox or centre crop; area or linear filter), RGB, ``(v / 255 - mean) / std``.
The exported model takes ``images`` (1, 3, H, W) and returns ``output0`` (1, classes): softmax
probabilities, with the metadata ``agent/prefilter/model_info.py`` reads.
"""

from __future__ import annotations

import dataclasses
import pathlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from agent.errors import DatasetError, ModelError
from agent.prefilter.classify_input import (
    Interpolation,
    Normalisation,
    ResizeMode,
    normalise_into,
    plan_input,
    resize_into,
)

MEAN = (0.485, 0.456, 0.406)  # ImageNet's, the torchvision convention (the net is trained from scratch)
STD = (0.229, 0.224, 0.225)
RESIZE: ResizeMode = "stretch"
INTERPOLATION: Interpolation = "area"  # the frame is shrunk 2.5x: area averaging keeps thin scratches


def build_net(width: int, num_classes: int, pool: str = "avgmax") -> Any:
    """ResNet-18 layout at ``width`` channels in the first stage (64 = torchvision's resnet18 with
    ``pool="avg"``). ``pool="avgmax"``: the head sees the global average *and* the global maximum of
    the last feature map (concatenated), so a defect a few pixels wide is not averaged away."""
    import torch
    from torch import nn
    from torchvision.models.resnet import BasicBlock

    class NarrowResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            stages: list[nn.Module] = []
            inplanes = width
            for i, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
                stride = 1 if i == 0 else 2
                down = None
                if stride != 1 or inplanes != planes:
                    down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
                stages.append(nn.Sequential(BasicBlock(inplanes, planes, stride, down), BasicBlock(planes, planes)))
                inplanes = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.maxpool_head = nn.AdaptiveMaxPool2d(1) if pool == "avgmax" else None
            self.fc = nn.Linear(inplanes * (2 if pool == "avgmax" else 1), num_classes)
            for m in self.modules():  # torchvision's init
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            pooled = torch.flatten(self.avgpool(x), 1)
            if self.maxpool_head is not None:
                pooled = torch.cat([pooled, torch.flatten(self.maxpool_head(x), 1)], 1)
            logits: torch.Tensor = self.fc(pooled)
            return logits

    return NarrowResNet18()


def conv_bn_pairs(net: Any) -> list[tuple[Any, Any]]:
    """Every (convolution, its BatchNorm) of ``build_net``'s network, in forward order."""
    pairs = [(net.conv1, net.bn1)]
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in stage:
            pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2)]
            if block.downsample is not None:
                pairs.append((block.downsample[0], block.downsample[1]))
    return pairs


# -- data ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InputPrep:
    """How frames become network inputs (the model's metadata says it; ``agent.prefilter.model_info``)."""

    height: int
    width: int
    resize: ResizeMode = RESIZE
    interpolation: Interpolation = INTERPOLATION
    normalisation: Normalisation = Normalisation(MEAN, STD)


def load_images(files: Sequence[pathlib.Path], prep: InputPrep) -> np.ndarray:
    """The images resized exactly as the runtime does: (N, h, w, 3) uint8 BGR."""
    images = np.empty((len(files), prep.height, prep.width, 3), np.uint8)
    plans: dict[tuple[int, int], Any] = {}
    for i, path in enumerate(files):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"image {path}: OpenCV cannot decode it; expected a JPEG, PNG or BMP file")
        key = (image.shape[1], image.shape[0])
        if key not in plans:
            plans[key] = plan_input(key[0], key[1], prep.width, prep.height, prep.resize)
        resize_into(image, plans[key], images[i], prep.interpolation)
    return images


def load_split(root: pathlib.Path, split: str, names: tuple[str, ...], h: int,
               w: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every image of ``root/split/<class>/``, resized as the shipped classifier's runtime does: (N, h, w, 3)
    uint8 BGR, (N,) class ids, and the images' paths relative to ``root``."""
    files = sorted((c, p) for c, name in enumerate(names) for p in (root / split / name).glob("*.jpg"))
    images = load_images([p for _, p in files], InputPrep(h, w))
    labels = np.asarray([c for c, _ in files], np.int64)
    return images, labels, [p.relative_to(root).as_posix() for _, p in files]


def to_tensor(batch: np.ndarray, norm: Normalisation) -> np.ndarray:
    """(N, h, w, 3) uint8 BGR -> (N, 3, h, w) float32, normalised exactly as the runtime does."""
    out = np.empty((batch.shape[0], 3, batch.shape[1], batch.shape[2]), np.float32)
    for i in range(batch.shape[0]):
        normalise_into(batch[i], norm, out[i])
    return out


def augment(batch: np.ndarray, rng: np.random.Generator, shift: int) -> np.ndarray:
    """Flips (the scene has no up/down or left/right), a shift of up to ``shift`` px with edge
    replication, brightness and contrast +-15%. No scale change: the camera is fixed."""
    out = np.empty_like(batch)
    n, h, w = batch.shape[:3]
    for i in range(n):
        img = batch[i]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        if rng.random() < 0.5:
            img = img[::-1]
        dx, dy = (int(v) for v in rng.integers(-shift, shift + 1, 2))
        if dx or dy:
            padded = np.pad(img, ((shift, shift), (shift, shift), (0, 0)), mode="edge")
            img = padded[shift + dy:shift + dy + h, shift + dx:shift + dx + w]
        gain, contrast = rng.uniform(0.85, 1.15, 2)
        f = img.astype(np.float32)
        f = (f - f.mean()) * contrast + f.mean() * gain
        out[i] = np.clip(f, 0, 255).astype(np.uint8)
    return out


# -- training -----------------------------------------------------------------------------------------------


def lr_at(step: int, steps_per_epoch: int, epochs: int, peak: float) -> float:
    """One epoch of linear warm-up to ``peak``, then cosine to 0."""
    warmup, total = steps_per_epoch, steps_per_epoch * epochs
    if step < warmup:
        return float(peak * (step + 1) / warmup)
    return float(peak * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, total - warmup))))


def make_optimizer(net: Any, kind: str, lr: float, weight_decay: float) -> Any:
    """AdamW or SGD (nesterov, momentum 0.9); weight decay on weights only, not on biases and BatchNorms."""
    import torch

    decay = [p for _n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for _n, p in net.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}]
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)


def train_frame_epoch(net: Any, opt: Any, loss_fn: Any, x: np.ndarray, y: np.ndarray, batch: int,
                      rng: np.random.Generator, shift: int, norm: Normalisation,
                      lr_of_step: Callable[[int], float], step: int,
                      freeze_batchnorm: bool = False) -> tuple[float, float, int]:
    """One epoch over whole frames (augmented); returns (mean loss, accuracy, the next step number). A last
    partial batch is dropped, but never the only one. ``freeze_batchnorm``: BatchNorms normalise with their
    running statistics and do not update them (a fine-tune on few images keeps the base model's)."""
    import torch

    net.train()
    if freeze_batchnorm:
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
    order = rng.permutation(len(y))
    steps = max(1, len(y) // batch)
    running, seen, correct = 0.0, 0, 0
    for b in range(steps):
        idx = np.sort(order[b * batch:(b + 1) * batch])
        xb = torch.from_numpy(to_tensor(augment(x[idx], rng, shift), norm))
        yb = torch.from_numpy(y[idx])
        for group in opt.param_groups:
            group["lr"] = lr_of_step(step)
        opt.zero_grad(set_to_none=True)
        logits = net(xb)
        loss = loss_fn(logits, yb)
        loss.backward()
        opt.step()
        step += 1
        running += loss.item() * len(idx)
        seen += len(idx)
        correct += int((logits.argmax(1) == yb).sum())
    return running / seen, correct / seen, step


def evaluate_torch(net: Any, x: Any, y: Any, loss_fn: Any) -> tuple[float, float]:
    """(accuracy, mean loss) of ``net`` on tensors ``x``, ``y``."""
    import torch

    net.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(y), 64):
            logits = net(x[i:i + 64])
            loss += float(loss_fn(logits, y[i:i + 64])) * len(logits)
            correct += int((logits.argmax(1) == y[i:i + 64]).sum())
    return correct / len(y), loss / len(y)


# -- export -------------------------------------------------------------------------------------------------


def export_classifier(net: Any, target: pathlib.Path, imgsz: tuple[int, int], metadata: Mapping[str, str],
                      check_inputs: np.ndarray) -> None:
    """ONNX with softmax probabilities, opset 17, batch 1, ``metadata`` as its metadata_props; checked to
    give what torch gives on ``check_inputs`` ((N, 3, h, w) float32, prepared frames)."""
    import onnx
    import onnxruntime as ort
    import torch

    net.eval()

    class WithSoftmax(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net(x), dim=1)

    h, w = imgsz
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = target.with_name(target.stem + ".raw.onnx")
    # the TorchScript exporter (it folds BatchNorms and names nodes by module) warns that it is deprecated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(WithSoftmax().eval(), (torch.zeros(1, 3, h, w),), str(raw), input_names=["images"],
                          output_names=["output0"], opset_version=17, dynamo=False, do_constant_folding=True)
    model = onnx.load(str(raw))
    raw.unlink()
    model.ir_version = min(model.ir_version, 10)  # onnxruntime 1.31 reads IR <= 13; ultralytics writes 10
    del model.metadata_props[:]
    for k, v in metadata.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    sess = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for i in range(len(check_inputs)):
            x = check_inputs[i:i + 1]
            expect = torch.softmax(net(torch.from_numpy(x)), 1).numpy()
            got = sess.run(None, {"images": x})[0]
            if not np.allclose(expect, got, atol=1e-4):
                raise ModelError(f"exported model {target} disagrees with torch: {expect} vs {got}")
