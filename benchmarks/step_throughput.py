"""Images/s of automc's training loop vs a bare PyTorch loop on the same model, data and batch.

The loop adds augmentation on the device, an LR schedule, progress accounting and hooks; this
prints what that costs. Target: ratio >= 0.9. Usage: python benchmarks/step_throughput.py [--task digits]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from automc_env.tasks import get_task
from automc_env.training import resolve_device, train


def bare_loop(model, data, epochs, lr, batch_size, augment, generator):
    """The minimal equivalent: shuffle, (same augmentation), forward, CE, backward, SGD step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        for x, y in data.batches(batch_size, generator=generator, shuffle=True, augment=augment):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", default="digits")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    task = get_task(args.task)
    device = resolve_device(args.device)
    data = task.load_data(device)
    torch.manual_seed(0)
    model = task.build_model().to(device)
    images = len(data.train) * args.epochs
    results = {"bare": [], "automc": []}
    for _ in range(args.repeats):
        for name in ("bare", "automc"):
            m = copy.deepcopy(model)
            g = torch.Generator().manual_seed(0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            if name == "bare":
                bare_loop(m, data.train, args.epochs, task.lr, task.batch_size, task.augment, g)
            else:
                train(m, data.train, epochs=args.epochs, lr=task.lr, batch_size=task.batch_size, generator=g,
                      augment=task.augment)
            if device.type == "cuda":
                torch.cuda.synchronize()
            results[name].append(images / (time.perf_counter() - start))
    bare, ours = max(results["bare"]), max(results["automc"])
    print(f"task {task.name} ({task.model}), device {device}, batch {task.batch_size}, "
          f"{args.epochs} epochs x {len(data.train)} images, best of {args.repeats}")
    print(f"bare PyTorch loop : {bare:10.0f} images/s")
    print(f"automc train()    : {ours:10.0f} images/s")
    print(f"ratio             : {ours / bare:10.2f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
