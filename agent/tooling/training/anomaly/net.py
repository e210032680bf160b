"""The anomaly network: a small fully convolutional segmentation net (torch), and its export wrapper. torch is
imported inside the functions (the train extra), so the classes are built there, as resnet.py does.

Input (B, 3, H, W) normalised frames; :func:`anomaly_net` gives logits at 1/4 of the input (B, 1, H/4, W/4).
:func:`exported` adds what the ONNX graph outputs: ``anomaly_map`` (sigmoid of the logits, 0..1) and ``score``
(B,), the largest value of the map after a 3x3 average (one hot cell alone does not make a frame anomalous).
Dilated convolutions at 1/4 give a receptive field of about 100 input pixels at little cost.
"""

from __future__ import annotations

from typing import Any


def anomaly_net(width: int = 32) -> Any:
    """A new ``AnomalyNet`` (torch ``nn.Module``) of ``width`` channels at 1/2 of the input, 2x at 1/4."""
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class AnomalyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.features = nn.Sequential(
                block(3, w // 2, 2), block(w // 2, w), block(w, 2 * w, 2), block(2 * w, 2 * w),
                block(2 * w, 2 * w, dilation=2), block(2 * w, 2 * w, dilation=4), block(2 * w, 2 * w, dilation=8))
            self.head = nn.Conv2d(2 * w, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.head(self.features(x))
            return out

    return AnomalyNet()


def exported(net: Any) -> Any:
    """``net`` wrapped to give (anomaly_map (B, 1, H/4, W/4) in 0..1, score (B,)): what the ONNX file holds."""
    import torch
    from torch import nn

    class ExportedAnomaly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            amap = torch.sigmoid(self.net(x))
            score = torch.amax(self.pool(amap), dim=(1, 2, 3))
            return amap, score

    return ExportedAnomaly().eval()
