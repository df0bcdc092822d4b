"""Smoke runs of the paper's experiments (examples/*/run.py --quick): each completes
and writes its table and plots with sane values. The whole file takes well under a
minute on one CPU thread."""
from __future__ import annotations

import importlib.util
import json
import math
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(example: str):
    path = os.path.join(ROOT, "examples", example, "run.py")
    spec = importlib.util.spec_from_file_location(f"himdsl_example_{example}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bayes_gan_classification_quick(tmp_path):
    rows = _load("bayes_gan_classification").main(["--quick", "--out", str(tmp_path)])
    for name in ("results.csv", "results.md", "test_error.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert [r["method"] for r in rows] == ["Bayesian GAN + VI", "Bayesian GAN + MAP",
                                           "Bayesian NN + VI", "Bayesian NN + MAP"]
    for r in rows:
        assert r["dataset"] == "crabs"
        assert 0.0 <= r["test_error"] <= 1.0 and 0.0 <= r["train_error"] <= 1.0
    by_method = {r["method"]: r for r in rows}
    # 200 steps: MAP of the BNN is already good; everything is at least a valid classifier
    assert by_method["Bayesian NN + MAP"]["test_error"] < 0.5
    assert by_method["Bayesian GAN + MAP"]["train_error"] < 0.5


def test_deep_implicit_fit_quick(tmp_path):
    results = _load("deep_implicit_fit").main(["--quick", "--out", str(tmp_path)])
    for name in ("results.json", "results.md", "marginals.png", "hidden_units.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["c2st"] == results["c2st"]
    c2st = results["c2st"]
    assert all(0.0 <= v <= 1.0 for v in c2st.values())
    assert c2st["true model"] < 0.65          # the truth is indistinguishable from held-out data
    assert c2st["untrained model"] > 0.75     # and the C2ST can tell a wrong model
    for stats in results["hidden_units"].values():
        assert 0.0 <= stats["mean"] <= 1.0 and math.isfinite(stats["median"])
