"""NS (C3): Network Slimming — prune channels with the smallest BN scaling factors, then fine-tune.

Per methods.md C3 and the NS paper (Liu et al. 2017):

1. *(optional)* sparsity training: ``sparsity_epochs`` x E_pre epochs with an L1 penalty
   ``sparsity`` x Σ|γ| on every BN scale, which pushes unimportant channels' γ towards zero. The paper's
   grid has no hyperparameter for it and the AutoMC code skips it (it prunes the pre-trained γ as
   they are), so it is **off by default** (code parity); turn it on with the method options
   ``{"NS": {"sparsity": 1e-4, "sparsity_epochs": 0.1}}`` (1e-4 is the NS paper's CIFAR value).
2. Global ranking of all channels by |γ| of the BN layers that normalise them (a channel group with
   several BNs, like a ResNet's residual stream, averages them), with the per-layer cap HP6 (``max``).
   Channel groups without a BN (the rank channels of a Tucker-2 or filter-basis layer left by HOS
   or LFB) are ranked by their filters' L1 norm relative to their group's mean, on the scale of
   the network's mean |γ| (``pruning.bn_scales``).
3. Physical removal sized so that the parameter count drops to ``keep`` of the current model,
   ``keep = max(1 − HP2/r_prev, 0.1)`` (HP2 is a fraction of the ORIGINAL model's parameters).
4. Fine-tune ``int(HP1 · E_pre)`` epochs (SGD, the task's fine-tune lr, MultiStepLR), best val
   epoch kept.

Deviation from the paper code: the code binary-searches a γ threshold on probe rebuilds; here the
same global ranking is sized exactly by an analytic parameter count (compressors.pruning).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from compressors.base import BaseCompressor, CompressionContext, register
from compressors.pruning import bn_scales, prune_to_keep


def bn_l1(model: nn.Module) -> torch.Tensor:
    return sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.BatchNorm2d))


class NetworkSlimming(BaseCompressor):
    name = "NS"

    def compress(self, model: nn.Module, settings: Mapping[str, Any], ctx: CompressionContext) -> nn.Module:
        opts = ctx.options
        sparsity, sparsity_epochs = float(opts.get("sparsity", 0.0)), float(opts.get("sparsity_epochs", 0.0))
        if sparsity > 0 and sparsity_epochs > 0:
            ctx.fine_tune(model, sparsity_epochs * ctx.task.pretrain_epochs, lr=ctx.task.finetune_lr,
                          select_best=False, desc="NS sparsity",
                          extra_loss=lambda m, x, y, logits: sparsity * bn_l1(m))
        keep = ctx.keep_ratio(model)
        prune_to_keep(model, ctx.example_input(), bn_scales, keep, max_layer_ratio=float(settings["max_prune"]))
        ctx.fine_tune(model, ctx.epochs(settings["ft"]), desc="NS fine-tune")
        return model


register(NetworkSlimming())
