"""BatchNorms re-created under convolutions whose BatchNorm was folded into them at export.

An export fuses each Conv+BatchNorm into one convolution with a bias, so an ONNX file keeps
the function but not the split. To train again, the fused weights go back into the
convolution and each BatchNorm is re-created from the statistics of its convolution's output
on real images:

    fused:    y = W x + b
    unfused:  y = gamma (W x - mean) / sqrt(var + eps) + beta
    with mean, var = statistics of W x,  gamma = sqrt(var + eps),  beta = b + mean

which is exactly the fused function in eval mode and, because batch statistics are close to
those running statistics, close to it in train mode, so training picks up where the exported
model left off. Needs torch (the train extra).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from agent.errors import ModelError


def load_fused(conv: Any, bn: Any, weight: np.ndarray, bias: np.ndarray) -> None:
    """Put a fused (weight, bias) into ``conv`` + ``bn``: an identity BatchNorm carrying the bias."""
    import torch

    with torch.no_grad():
        if tuple(conv.weight.shape) != weight.shape:
            raise ModelError(f"convolution weight of shape {weight.shape} does not fit a layer of shape "
                             f"{tuple(conv.weight.shape)}")
        conv.weight.copy_(torch.from_numpy(np.array(weight, dtype=np.float32)))
        bn.weight.fill_(1.0)
        bn.bias.copy_(torch.from_numpy(np.array(bias, dtype=np.float32)))
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)


def recreate_batchnorms(model: Any, pairs: Sequence[tuple[Any, Any]], images: Iterable[np.ndarray]) -> int:
    """Re-estimate every BatchNorm of ``pairs`` ((conv, bn), loaded with ``load_fused``) from the
    convolution outputs of ``model`` on ``images`` (network inputs, 1xCxHxW float32), keeping the
    eval-mode function. Returns the number of images used."""
    import torch

    sums: dict[int, list[Any]] = {}
    hooks = []
    for i, (conv, _bn) in enumerate(pairs):
        def hook(_m: Any, _i: Any, out: Any, key: int = i) -> None:
            x = out.detach().double()
            s = sums.setdefault(key, [0.0, 0.0, 0])
            s[0] = s[0] + x.sum(dim=(0, 2, 3))
            s[1] = s[1] + (x * x).sum(dim=(0, 2, 3))
            s[2] += x.shape[0] * x.shape[2] * x.shape[3]
        hooks.append(conv.register_forward_hook(hook))
    model.eval()
    count = 0
    try:
        with torch.no_grad():
            for image in images:
                model(torch.from_numpy(np.asarray(image, dtype=np.float32)))
                count += 1
    finally:
        for h in hooks:
            h.remove()
    if not count:
        raise ModelError("no images to re-create the BatchNorm statistics from")
    with torch.no_grad():
        for i, (_conv, bn) in enumerate(pairs):
            total, total_sq, n = sums[i]
            mean = total / n
            var = (total_sq / n - mean * mean).clamp_min(1e-6)
            bias = bn.bias.detach().double().clone()
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_(torch.sqrt(var + bn.eps).float())
            bn.bias.copy_((bias + mean).float())
    return count
