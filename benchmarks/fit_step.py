"""Training speed of `himdsl fit`: steps per second of the trainer against a minimal
hand-written PyTorch LFVI loop using the same networks and batch (same run,
median of repeats), and step time and peak memory as the data grow.

    python benchmarks/fit_step.py [--repeats 5] [--steps 30] [--device cpu|cuda]

The hand-written loop is the paper's Algorithm 1 in its plainest form: one ratio
update (joint simulation against data rows), one update of q(β), q(z | x, β)
and the point-estimated weights. It uses copies of the trainer's own networks
(ratio estimator, global and local guides), so the comparison measures what the
trainer adds around them.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import himdsl
from himdsl.infer import FitSettings, Trainer


def make_trainer(path: str, rows: int, device: str, seed: int = 0) -> Trainer:
    """A trainer on `rows` rows simulated from the model's prior."""
    model = himdsl.load(path)
    data, _ = model.simulate(rows=rows, seed=seed)
    module = model.module(device)
    return Trainer(module, data, FitSettings(steps=10**6, warmup=0.0))


class HandWrittenLFVI:
    """Algorithm 1 with the trainer's networks: ratio step, then q and weight step."""

    def __init__(self, trainer: Trainer):
        self.view = trainer.view
        self.model = trainer.model
        self.ratio = copy.deepcopy(trainer.ratio)
        self.global_guide = copy.deepcopy(trainer.global_guide)
        self.local_guide = copy.deepcopy(trainer.local_guide)
        self.particles = trainer.settings.particles if self.view.g_shapes else 1
        self.batch = trainer.settings.batch
        q_params = list(self.global_guide.parameters()) + list(self.local_guide.parameters())
        self.q_opt = torch.optim.Adam(q_params + list(self.model.parameters()), lr=1e-3)
        self.r_opt = torch.optim.Adam(self.ratio.parameters(), lr=1e-3)

    def _rows(self):
        idx = torch.randint(self.view.n_rows, (self.batch,), device=self.view.device)
        return self.view.rows(idx)

    def _globals(self, grad: bool):
        if not self.view.g_shapes:
            return {}, 0.0, torch.zeros(self.particles, 0, device=self.view.device)
        globals, log_q, _ = self.global_guide.rsample(self.particles)
        if not grad:
            globals = {k: v.detach() for k, v in globals.items()}
        return globals, log_q, self.view.g_flat(globals)

    def _logit(self, x, z, g):
        g = g[:, None, :].expand(*x.shape[:2], g.shape[-1])
        return self.ratio(torch.cat([x, z, g], -1))

    def step(self) -> None:
        rows, s = self._rows(), self.particles
        # ratio: (x', z') ~ p(x, z | β) against (x_n, z ~ q(z | x_n, β))
        with torch.no_grad():
            globals, _, g = self._globals(grad=False)
            sim = self.view.simulate(globals, rows, s)
            x_data = self.view.x_features(self.view.with_data(rows, s))
            z_q, _ = self.local_guide.rsample(x_data, g)
        logit_p = self._logit(self.view.x_features(sim), self.view.z_flat(sim), g)
        logit_q = self._logit(x_data, z_q, g)
        loss = F.softplus(-logit_p).mean() + F.softplus(logit_q).mean()
        self.r_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.r_opt.step()
        # q(β), q(z | x, β) and weights through the frozen ratio
        self.ratio.requires_grad_(False)
        globals, log_q, g = self._globals(grad=True)
        z_q, _ = self.local_guide.rsample(x_data, g)
        log_prior = self.model.log_prior(globals) if globals else 0.0
        elbo = log_prior - log_q + self.view.n_rows * self._logit(x_data, z_q, g).mean(-1)
        loss = -elbo.mean() / self.view.n_rows
        if list(self.model.parameters()):
            sim = self.view.simulate(globals, rows, s)
            loss = loss + torch.exp(-self._logit(self.view.x_features(sim), self.view.z_flat(sim), g)).mean()
        self.q_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.q_opt.step()
        self.ratio.requires_grad_(True)


def steps_per_second(step, steps: int, device: str) -> float:
    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps / (time.perf_counter() - start)


def compare(path: str, args) -> tuple[float, float]:
    trainer = make_trainer(path, 1000, args.device)
    hand = HandWrittenLFVI(trainer)
    ours, theirs = [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        ours.append(steps_per_second(trainer.step, args.steps, args.device))
        theirs.append(steps_per_second(hand.step, args.steps, args.device))
    return statistics.median(ours), statistics.median(theirs)


def scaling_child(rows: int, args) -> None:
    """Run in a fresh process: step time and peak memory at `rows` data rows."""
    trainer = make_trainer("examples/hier_gauss/model.him", rows, args.device)
    rate = steps_per_second(trainer.step, args.steps, args.device)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _peak_rss_mib()
    print(json.dumps({"rows": rows, "ms_per_step": 1000 / rate, "peak_mib": peak}))


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scaling-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scaling_child is not None:
        return scaling_child(args.scaling_child, args)
    print(f"device: {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("\n| model | himdsl fit (steps/s) | hand-written loop (steps/s) | relative |")
    print("| --- | ---: | ---: | ---: |")
    for name in ("hier_gauss", "deep_implicit"):
        ours, theirs = compare(f"examples/{name}/model.him", args)
        print(f"| {name} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} |")
    print("\n| data rows N | ms per step | peak memory (MiB) |")
    print("| ---: | ---: | ---: |")
    for rows in (10**3, 10**5, 10**6):
        out = subprocess.run([sys.executable, __file__, "--scaling-child", str(rows), "--steps", str(args.steps),
                              "--device", args.device], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {rows:,} | {row['ms_per_step']:.1f} | {row['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
