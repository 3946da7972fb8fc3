"""CNNs of the AutoMC paper (methods.md §0.1) and small relatives that train on a CPU.

* ``CifarResNet``: pre-activation basic blocks (BN → act → 3x3 conv → BN → act → 3x3 conv), three
  stages of n blocks with widths 16/32/64, a 3x3 stem, and a **projection shortcut (BN → 1x1 conv)
  in every block** — that is why the paper's ResNet-56 has 0.90 M parameters, and it is also what
  lets torch-pruning remove residual channels cleanly. Head: BN → act → global average pool → linear.
  Depths 20/32/44/56/110/164 use n = (depth − 2) / 6 (so "ResNet-164" is the basic-block variant, as
  in the paper's code). ResNet-8 (n = 1) is the small model of the CPU tasks.
* ``VGG``: 3x3 conv (with bias) → BN → act per entry, max-pools per the standard cfg lists, a single
  linear classifier on the pooled features.

Every model carries ``arch`` (a plain dict: family, depth or cfg, widths, classes, input shape,
activation). Compressors that build a *new* network of the same family — a thinner distillation
student (LMA), a filter-basis network (LFB) — call :func:`build_model` with a modified ``arch``
(``width`` multiplier, ``activation`` factory name and options).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
    # Small VGG for 8x8 inputs (CPU tasks, tests): three pools take 8x8 to 1x1.
    "vgg-small": [16, 16, "M", 32, 32, "M", 64, 64, "M"],
}

RESNET_DEPTHS = (8, 20, 32, 44, 56, 110, 164)

# Factories for activation modules, selectable by name in ``arch["activation"]``. Compressors may
# register more (LMA registers its piecewise-linear unit) without this module knowing about them.
ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {"relu": lambda **_: nn.ReLU(inplace=True)}


def make_activation(arch: dict[str, Any]) -> nn.Module:
    name = arch.get("activation", "relu")
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; registered: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](**arch.get("activation_options", {}))


def _width(c: int, arch: dict[str, Any]) -> int:
    return max(1, int(c * arch.get("width", 1.0)))


class PreActBlock(nn.Module):
    """Pre-activation basic block with a BN → 1x1-conv projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, arch: dict[str, Any]):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.act1 = make_activation(arch)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = make_activation(arch)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Sequential(nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act1(self.bn1(x)))
        out = self.conv2(self.act2(self.bn2(out)))
        return out + self.shortcut(x)


class CifarResNet(nn.Module):
    def __init__(self, arch: dict[str, Any]):
        super().__init__()
        self.arch = dict(arch)
        depth = arch["depth"]
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {RESNET_DEPTHS}, got {depth}")
        n = (depth - 2) // 6
        widths = [_width(w, arch) for w in arch.get("widths", (16, 32, 64))]
        self.conv1 = nn.Conv2d(arch["in_channels"], widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for stage, c_out in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(PreActBlock(c_in, c_out, stride, arch))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.act = make_activation(arch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, arch["num_classes"])
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.conv1(x))
        x = self.pool(self.act(self.bn(x)))
        return self.fc(torch.flatten(x, 1))


class VGG(nn.Module):
    def __init__(self, arch: dict[str, Any]):
        super().__init__()
        self.arch = dict(arch)
        cfg = arch["cfg"]
        if isinstance(cfg, str):
            if cfg not in VGG_CONFIGS:
                raise ValueError(f"unknown VGG cfg {cfg!r}; known: {sorted(VGG_CONFIGS)}")
            cfg = VGG_CONFIGS[cfg]
        layers: list[nn.Module] = []
        c_in = arch["in_channels"]
        for entry in cfg:
            if entry == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            c_out = _width(int(entry), arch)
            layers += [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=True), nn.BatchNorm2d(c_out), make_activation(arch)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # identity on the 1x1 maps of the paper's 32x32 VGGs
        self.classifier = nn.Linear(c_in, arch["num_classes"])
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _init(model: nn.Module) -> None:
    """The paper code's initialisation: conv ~ N(0, sqrt(2/(k²·c_out))), BN (1, 0), linear N(0, 0.01)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def reinitialise(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Fresh paper-code weights for every conv / BN / linear of an existing (e.g. pruned) network.

    Same rule as a newly built model (conv ~ N(0, √(2/(k²·c_out))), BN (1, 0) with reset running
    statistics, linear N(0, 0.01), biases 0), but drawn on the CPU from ``generator`` (else torch's
    global RNG) and copied, so a step's result is the same on every device. Construction keeps
    ``nn.init`` (``_init``) so that pre-trained base models stay bit-identical. Other modules (custom
    layers of earlier steps) reset themselves: ``reinitialise()`` if they define it (an LMA unit
    returns to its initial hinge), else ``reset_parameters()``; their children are left to them.
    """
    def normal_(w: torch.Tensor, std: float) -> None:
        w.copy_(torch.randn(w.shape, generator=generator, dtype=torch.float32).mul_(std))

    def visit(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d):
            normal_(m.weight, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()  # weight 1, bias 0, fresh running statistics
        elif isinstance(m, nn.Linear):
            normal_(m.weight, 0.01)
            if m.bias is not None:
                m.bias.zero_()
        elif m is not model and callable(getattr(m, "reinitialise", None)):
            m.reinitialise()
        elif m is not model and callable(getattr(m, "reset_parameters", None)):
            m.reset_parameters()
        else:
            for child in m.children():
                visit(child)

    visit(model)


def model_arch(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32) -> dict[str, Any]:
    """The ``arch`` dict of a named model: ``resnet8/20/32/44/56/110/164``, ``vgg11/13/16/19``, ``vgg-small``."""
    base = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size,
            "activation": "relu", "width": 1.0}
    if name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) in RESNET_DEPTHS:
        return {"family": "resnet", "depth": int(name[6:]), "widths": (16, 32, 64), **base}
    if name in VGG_CONFIGS:
        return {"family": "vgg", "cfg": name, **base}
    raise ValueError(f"unknown model {name!r}; known: {[f'resnet{d}' for d in RESNET_DEPTHS] + sorted(VGG_CONFIGS)}")


def build_model(arch: dict[str, Any]) -> nn.Module:
    """A freshly initialised network for an ``arch`` dict (see :func:`model_arch`)."""
    family = arch.get("family")
    if family == "resnet":
        return CifarResNet(arch)
    if family == "vgg":
        return VGG(arch)
    raise ValueError(f"unknown model family {family!r}; known: 'resnet', 'vgg'")


def classifier(model: nn.Module) -> nn.Linear:
    """The final linear layer (never pruned: its outputs are the classes)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("model has no linear classifier")
    return last[-1]
