"""Step time of `fit` on one CPU thread against torch's default (one per core), for
networks of growing width: the rule behind the plan's thread count
(himdsl/infer/plan.py, SINGLE_THREAD_MAX_WIDTH).

    python benchmarks/threads.py [--repeats 3] [--steps 30]

Each configuration trains the same trainer alternately with 1 thread and with
torch's default, in one process, and reports the median milliseconds per step.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

import torch

import himdsl
from himdsl.infer import FitSettings, RatioSettings, Trainer

CASES = [  # (example, ratio widths)
    ("hier_gauss", (128, 128)),
    ("hier_gauss", (256, 256)),
    ("hier_gauss", (512, 512)),
    ("hier_gauss", (1024, 1024)),
    ("deep_implicit", (128, 128)),
]


def trainer_for(example: str, hidden: tuple[int, ...]) -> Trainer:
    model = himdsl.load(f"examples/{example}/model.him")
    data, _ = model.simulate(rows=1000, seed=0)
    settings = FitSettings(steps=10**6, warmup=0.0, ratio=RatioSettings(hidden=hidden))
    return Trainer(model.module("cpu"), data, replace(settings, checks=False))


def ms_per_step(trainer: Trainer, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    for _ in range(3):
        trainer.step()
    start = time.perf_counter()
    for _ in range(steps):
        out = trainer.step()
    float(next(iter(out.values())))          # wait for the last step
    return 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    default = os.cpu_count() or 1
    print(f"| model | ratio widths | ms/step, 1 thread | ms/step, {default} threads | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for example, hidden in CASES:
        trainer = trainer_for(example, hidden)
        times = {1: [], default: []}
        for _ in range(args.repeats):
            for threads in times:
                times[threads].append(ms_per_step(trainer, threads, args.steps))
        one, many = (statistics.median(times[t]) for t in (1, default))
        print(f"| {example} | {list(hidden)} | {one:.1f} | {many:.1f} | {many / one:.2f} |", flush=True)


if __name__ == "__main__":
    main()
