"""Parameter and FLOP counts from one traced forward pass (forward hooks, no extra packages).

FLOPs here are multiply-adds x 2 of convolutions and linear layers (what papers and Ultralytics
report as GFLOPs); normalisation, activations and pooling are left out, as they are there.
"""
from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, height: int, width: int) -> float:
    """FLOPs of one forward pass on a 1 x 3 x height x width input."""
    total = [0]

    def conv_hook(m: nn.Conv2d, _inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += 2 * k * out.numel()

    def linear_hook(m: nn.Linear, _inp, out):
        total[0] += 2 * m.in_features * out.numel()

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, height, width))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return float(total[0])
