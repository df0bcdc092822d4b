"""Stored batches of the contrastive ratio's pairs: replayed for an expensive
simulator (`reuse`), and the whole training set under a simulation budget.

    store = PairStore(budget=10_000, steps=3000, pilot=1024, batch=512)
    store.may_simulate(k, spent)     # is a fresh batch within the budget's share at step k?
    store.add(batch)                 # True: kept for training; False: held out
    store.sample()                   # a stored training batch

Under a budget the ratio trains many times on the same simulations, and a network
of tens of thousands of weights then learns their noise: 17 batches of two_moons
replayed 12,000 times gave a C2ST of 0.77. So every `HOLD_OUT`-th batch is held
out, the network's pair loss on them is checked every `CHECK_EVERY` steps, and
when it has not improved for `PATIENCE` checks training pauses at the best network
seen, until fresh simulations arrive (what sbi's NPE does with a validation set).
"""
from __future__ import annotations

import copy
import math

import torch

# Pair batches (the latest) that `reuse` replays; with a budget every batch is kept.
REPLAY_STEPS = 50
HOLD_OUT = 10
CHECK_EVERY = 10
PATIENCE = 10


class PairStore:
    """Training and held-out pair batches, the budget's schedule, early stopping."""

    def __init__(self, budget: int | None, steps: int, pilot: int, batch: int):
        self.budget, self.steps, self.pilot, self.batch = budget, steps, pilot, batch
        self.train: list[tuple] = []
        self.held_out: list[tuple] = []
        self.added = 0
        self.best, self.since_best, self.best_state = math.inf, 0, None
        self.paused = False
        self.checked = -1

    def may_simulate(self, k: int, spent: int) -> bool:
        """Without a budget always; with one, while the simulations so far (`spent`,
        the pilot excluded) stay within its even share up to step k."""
        if self.budget is None or not self.train:
            return True
        share = self.pilot + (self.budget - self.pilot) * (k + 1) / self.steps
        return self.pilot + spent + self.batch <= min(share, self.budget)

    def add(self, batch: tuple, keep: bool) -> bool:
        """Store a fresh batch (if `keep`); True when it is for training."""
        self.added += 1
        self.paused = False
        if self.budget is not None and self.added % HOLD_OUT == 0:
            self.held_out.append(batch)
            self.best, self.since_best = math.inf, 0      # a new held-out set: compare anew
            return False
        if keep or self.budget is not None:
            self.train.append(batch)
            if self.budget is None:
                del self.train[:-REPLAY_STEPS]
        return True

    def sample(self) -> tuple:
        return self.train[int(torch.randint(len(self.train), ()))]

    @torch.no_grad()
    def check(self, k: int, net: torch.nn.Module, loss_of) -> bool:
        """Every CHECK_EVERY steps under a budget: the held-out loss; after PATIENCE
        checks without improvement the network goes back to its best state and
        training pauses. Returns True when the network was restored."""
        if self.budget is None or not self.held_out or k % CHECK_EVERY or k == self.checked:
            return False
        self.checked = k
        loss = sum(float(loss_of(*b)) for b in self.held_out) / len(self.held_out)
        if loss < self.best:
            self.best, self.since_best, self.best_state = loss, 0, copy.deepcopy(net.state_dict())
            return False
        self.since_best += 1
        if self.since_best < PATIENCE or self.paused:
            return False
        net.load_state_dict(self.best_state)
        self.paused = True
        return True

    def state_dict(self) -> dict:
        return {"train": [list(b) for b in self.train], "held_out": [list(b) for b in self.held_out],
                "added": self.added, "best": self.best, "since_best": self.since_best,
                "best_state": self.best_state, "paused": self.paused, "checked": self.checked}

    def load_state_dict(self, state: dict) -> None:
        self.train = [tuple(b) for b in state["train"]]
        self.held_out = [tuple(b) for b in state["held_out"]]
        self.added, self.best, self.since_best = state["added"], state["best"], state["since_best"]
        self.best_state, self.paused, self.checked = state["best_state"], state["paused"], state["checked"]
