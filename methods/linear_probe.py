"""The linear probe of LP-FT: the new head fit to convergence on the frozen network's features.

Kumar et al. (2022) probe with logistic regression on fixed features, solved to its optimum; a
probe of a few SGD epochs is far from it (7 steps of batch 32 on hymenoptera's 195 training images
left EfficientNet-Lite0's new head at 0.88 val, under the 0.94 its ImageNet head reaches
zero-shot). Here the head's inputs are read once per probe epoch (one augmented view of every
training image, through the network in eval mode, so with the statistics it will be used with),
cached, and the head is fit on every view cached so far by full-batch L-BFGS with an L2 penalty.
Under torch.distributed each rank reads its share, the features are gathered, every rank fits the
same head, and rank 0's copy is broadcast so they agree to the bit. A view holds at most
VIEW_BYTES of features: on a large dataset the probe reads a random subset of the epoch (the
loader's seeded order) and stops there, which a convex fit of a linear head does not miss.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from compress.core.distributed import broadcast_parameters, gather_rows, world_size
from compress.core.loader import TrainBatch

LBFGS_ITERATIONS = 200  # a convex problem of a few thousand rows: converged well before this
VIEW_BYTES = 512 * 2**20  # features one probe view may hold, over all ranks (1280-d features: 100k images)


@torch.no_grad()
def head_inputs(model: nn.Module, head: nn.Module, batches: Iterable[TrainBatch], device: torch.device,
                budget: int = VIEW_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """(what enters `head`, the targets) for the images of `batches`, with `model` in eval mode,
    up to `budget` bytes of features in all (the rest of the epoch is not read)."""
    seen: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().float()))
    targets = []
    was_training = model.training
    model.eval()
    share, held = budget // world_size(), 0
    try:
        for x, y, _index in batches:
            model(x.to(device, non_blocking=True))
            targets.append(y.to(device))
            held += seen[-1].numel() * seen[-1].element_size()
            if held >= share:
                break
    finally:
        hook.remove()
        model.train(was_training)
    return gather_rows(torch.cat(seen)), gather_rows(torch.cat(targets))


def fit_head(head: nn.Module, features: torch.Tensor, targets: torch.Tensor, l2: float) -> float:
    """Fit `head` (a Linear, or a small stack of layers) on `features` -> `targets` (class indices
    or soft labels) by L-BFGS, minimising mean cross-entropy + l2/2 * |weights|^2; returns the final
    cross-entropy. The head runs in eval mode while it is fit (dropout would make the objective
    random, which L-BFGS's line search cannot take)."""
    params = [p for p in head.parameters() if p.requires_grad]
    weights = [p for p in params if p.dim() > 1]
    was_training = head.training
    head.eval()
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=LBFGS_ITERATIONS, history_size=20,
                            line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        logits = head(features)
        loss = F.cross_entropy(logits.flatten(1), targets)
        penalty = sum((w * w).sum() for w in weights)
        total = loss + 0.5 * l2 * penalty
        total.backward()
        return total

    with torch.enable_grad():
        opt.step(objective)
        with torch.no_grad():
            loss = F.cross_entropy(head(features).flatten(1), targets)
    head.train(was_training)
    broadcast_parameters(head)
    return float(loss)

