"""Shared pytest configuration: the golden-file update flag, seeding, markers."""
import os

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `-n auto` runs one worker per core: threads inside each would only contend
    torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files from the current output (then inspect the diff)")


@pytest.fixture
def update_golden(request):
    return request.config.getoption("--update-golden")


@pytest.fixture(autouse=True)
def _seed_and_chdir(monkeypatch):
    """Every test starts from the same seed, in the repository root."""
    torch.manual_seed(0)
    np.random.seed(0)
    monkeypatch.chdir(ROOT)
