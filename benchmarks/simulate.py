"""Samples per second of the compiled `deep_implicit` model against a hand-written
PyTorch module of the same network, in the same run (median of repeats).

    python benchmarks/simulate.py [--batch 4096] [--repeats 15] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import himdsl


class HandWritten(nn.Module):
    """deep_implicit written directly in PyTorch (same layers, same noise)."""

    def __init__(self, d=100, hidden=128, out=10):
        super().__init__()
        self.d = d
        self.z2 = nn.Linear(d, hidden)
        self.h2 = nn.Linear(hidden, hidden)
        self.z1 = nn.Linear(d + hidden, hidden)
        self.h1 = nn.Linear(hidden, hidden)
        self.x = nn.Linear(d + hidden, out)

    def forward(self, rows: int):
        device = self.z2.weight.device
        eps2, eps1, eps0 = (torch.randn(rows, self.d, device=device) for _ in range(3))
        z2 = torch.relu(self.z2(eps2))
        h2 = torch.relu(self.h2(z2))
        z1 = torch.relu(self.z1(torch.cat([eps1, h2], -1)))
        h1 = torch.relu(self.h1(z1))
        return self.x(torch.cat([eps0, h1], -1))


def rate(step, batch: int, repeats: int, device: str) -> float:
    """Median samples per second of `step()` over `repeats` timed calls."""
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    compiled = himdsl.load("examples/deep_implicit/model.him").module(args.device)
    hand = HandWritten().to(args.device)
    results = {}
    with torch.no_grad():
        # interleave the two so that machine noise hits both alike
        for _ in range(3):
            results.setdefault("compiled", []).append(
                rate(lambda: compiled.simulate(rows=args.batch), args.batch, args.repeats, args.device))
            results.setdefault("hand-written", []).append(
                rate(lambda: hand(args.batch), args.batch, args.repeats, args.device))
    compiled_rate = statistics.median(results["compiled"])
    hand_rate = statistics.median(results["hand-written"])
    print(f"device: {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}")
    print("| simulator | samples / s | relative |")
    print("| --- | ---: | ---: |")
    print(f"| hand-written PyTorch | {hand_rate:,.0f} | 1.00 |")
    print(f"| himdsl compiled | {compiled_rate:,.0f} | {compiled_rate / hand_rate:.2f} |")


if __name__ == "__main__":
    main()
