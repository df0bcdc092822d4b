"""`himdsl fit` from the command line and from Python: the files it writes, and
bad data, flags and devices reported without a traceback. Accuracy is tested in
tests/infer; these runs are short."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import himdsl
from himdsl.cli import app
from himdsl.fitting import settings_for

runner = CliRunner()
HIER = "examples/hier_gauss/model.him"
SHORT = ["--steps", "20", "--samples", "300", "--batch", "16", "--particles", "4"]


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def hier_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    data, truth = himdsl.load(HIER).simulate(rows=60, seed=3)
    path = folder / "data.npz"
    np.savez(path, **data)
    return path


@pytest.fixture(scope="module")
def hier_fit(hier_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "out"
    code, text = _run("fit", HIER, hier_data, "--out", out, *SHORT)
    return code, text, out


def test_fit_writes_every_output_file(hier_fit):
    code, text, out = hier_fit
    assert code == 0, text
    assert "plan:" in text and "contrastive, reads z" in text and "beta[0]" in text
    assert "checks passed: q not collapsed, q no wider than the prior, simulations finite, data in range" in text
    # the last word of a 20-step run: its draws are not a posterior
    assert text.rstrip().splitlines()[-1].startswith("warning: 20 steps are too few to judge this fit")
    posterior = np.load(out / "posterior.npz")
    assert posterior["beta"].shape == (300, 2)
    local = np.load(out / "locals.npz")
    assert local["z_mean"].shape == (60, 2) and local["z_sd"].shape == (60, 2)
    assert (local["z_sd"] > 0).all()
    lines = (out / "summary.csv").read_text().splitlines()
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert [r["name"] for r in rows] == ["beta[0]", "beta[1]"]
    # the verdict below the table, as fit printed it (stansummary's comment lines)
    verdict = [line[2:] for line in lines if line.startswith("#")]
    assert verdict[0] == "checks passed: q not collapsed, q no wider than the prior, simulations finite, data in range"
    assert all(line.split()[0] in ("OK", "LOOK") for line in verdict[1:]) and len(verdict) > 1
    assert all(line in text for line in verdict[1:])
    assert list(rows[0]) == ["name", "Mean", "MCSE", "StdDev", "5%", "50%", "95%"]    # stansummary's
    assert float(rows[0]["MCSE"]) == pytest.approx(float(rows[0]["StdDev"]) / np.sqrt(300), rel=1e-4)
    trace = list(csv.DictReader(open(out / "trace.csv")))
    assert list(trace[0]) == ["step", "elbo", "ratio_loss", "ratio_accuracy", "seconds"]
    assert int(trace[-1]["step"]) == 20
    record = json.loads((out / "fit.json").read_text())
    assert record["settings"]["steps"] == 20 and record["device"].startswith("cpu")
    assert record["versions"]["himdsl"] == himdsl.__version__
    assert record["plan"]["ratio"] == "contrastive" and record["plan"]["ratio_locals"] == ["z"]
    assert record["verdict"]["ok"] is True and record["verdict"]["checks"]
    assert (out / "posterior.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkpoint.pt").exists()


MOSTLY_NAN = """
model mostly_nan
data x : real
latent mu ~ Normal(-3, 0.1)
plate n over x {
    noise e ~ Normal(0, 1)
    observe x = log(mu + e)
}
"""


def test_a_fit_that_fails_its_checks_exits_4_and_writes_no_posterior(tmp_path):
    """log(mu + e) is NaN for almost every simulation: the fit is not a posterior.
    It exits 4 with the reason, keeps its diagnostics, and removes the posterior of
    an earlier run in the same folder so nobody reads it as this fit's."""
    model = tmp_path / "mostly_nan.him"
    model.write_text(MOSTLY_NAN)
    np.savez(tmp_path / "data.npz", x=np.zeros(30))
    out = tmp_path / "out"
    out.mkdir()
    np.savez(out / "posterior.npz", mu=np.zeros(3))
    (out / "posterior.nc").write_bytes(b"an earlier run's")
    code, text = _run("fit", model, tmp_path / "data.npz", "--out", out, *SHORT)
    assert code == 4, text
    assert "failed its checks" in text and "NaN or inf" in text and "Traceback" not in text
    # the checks that passed and the advisory lines are printed as on a trusted fit
    assert "checks passed: q not collapsed" in text and ("  OK  " in text or "  LOOK" in text)
    assert not (out / "posterior.npz").exists() and not (out / "summary.csv").exists()
    assert not (out / "posterior.nc").exists()
    assert np.load(out / "posterior_untrusted.npz")["mu"].shape == (300,)
    record = json.loads((out / "fit.json").read_text())
    assert record["verdict"]["ok"] is False
    failed = [c["name"] for c in record["verdict"]["checks"] if not c["ok"] and not c["advisory"]]
    # the ratio, trained on the few finite simulations, disagrees with q too
    assert failed[0] == "simulations finite"
    assert set(failed) <= {"simulations finite", "data in range", "q matches the ratio"}


def test_resume_continues_from_the_checkpoint(hier_data, hier_fit):
    _, _, out = hier_fit
    code, text = _run("fit", HIER, hier_data, "--out", out, *SHORT, "--resume")
    assert code == 0, text
    trace = list(csv.DictReader(open(out / "trace.csv")))
    assert int(trace[-1]["step"]) == 20


def test_resume_asked_for_fewer_steps_than_done_is_refused_before_the_plan(hier_data, hier_fit):
    _, _, out = hier_fit
    code, text = _run("fit", HIER, hier_data, "--out", out, *SHORT, "--resume", "--steps", "10")
    assert code == 2
    assert "checkpoint" in text and "at step 20, past the 10 steps asked for" in text and "N above 20" in text
    assert "plan:" not in text and "resuming" not in text


def test_posterior_predictive_simulation(hier_fit, tmp_path):
    _, _, out = hier_fit
    code, text = _run("simulate", HIER, "-o", tmp_path / "pp.npz", "--posterior", out, "--rows", 5,
                      "--draws", 3)
    assert code == 0, text
    betas = np.load(tmp_path / "pp.truth.npz")["beta"]
    posterior = np.load(out / "posterior.npz")["beta"]
    assert all(any(np.allclose(b, p) for p in posterior) for b in betas)


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.zeros((5, 2))}, "missing array `x`"),
    ({"x": np.zeros((5, 3))}, "array `x` has shape [5, 3]; expected [N, 2]"),
    ({"x": np.array([[0.0, np.inf]] * 5)}, "array `x` contains inf at index [0, 1]"),
])
def test_bad_data_is_reported_with_the_array_name(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    code, text = _run("fit", HIER, path, "--out", tmp_path / "o", *SHORT)
    assert code == 2 and message in text and "Traceback" not in text, text


def test_labels_outside_their_range_are_reported(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((4, 5)), y=np.array([0, 1, 3, 1]))
    code, text = _run("fit", "examples/bayes_gan/model.him", path, "--out", tmp_path / "o", *SHORT)
    assert code == 2 and "label 3; `cat(2)` labels must lie in 0..1" in text


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "no CUDA device is available"),
    (["--device", "tpu"], "--device must be auto, cpu or cuda"),
    (["--guide", "beta=magic"], "its family must be one of auto, flow, mvnormal, normal, point"),
    (["--guide", "nope=flow"], "guide entry `nope`: the model has no latent of that name"),
    (["--method", "vi"], "method vi needs a model where every local latent"),
    (["--method", "best"], "--method must be auto, lfvi or vi"),
    (["--steps", "0"], "Invalid value for '--steps'"),
    (["--budget", "1000"], "budget 1,000 is below the 16,896 simulations of the inputs' scaling"),
])
def test_bad_flags_exit_2(hier_data, tmp_path, args, message):
    code, text = _run("fit", HIER, hier_data, "--out", tmp_path / "o", *SHORT, *args)
    if message == "no CUDA device is available":
        import torch
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    assert code == 2 and message in text, text


def test_a_budget_from_the_command_line_or_the_fit_block_caps_the_simulations(hier_data, tmp_path):
    code, text = _run("fit", HIER, hier_data, "--out", tmp_path / "o", *SHORT, "--budget", "20000")
    assert code == 0 and "simulations      20,000 rows in all (the budget), stored and reused" in text
    assert json.loads((tmp_path / "o" / "fit.json").read_text())["settings"]["budget"] == 20000
    source = Path(HIER).read_text() + "\nfit { budget = 30000 }\n"
    assert settings_for(himdsl.load(HIER, source=source)).budget == 30000


def test_missing_data_file(tmp_path):
    code, text = _run("fit", HIER, tmp_path / "none.npz", "--out", tmp_path / "o")
    assert code == 2 and "no such file" in text


def test_python_api_fit(hier_data):
    data = dict(np.load(hier_data))
    fit = himdsl.load(HIER).fit(data, steps=15, samples=200, batch=16, particles=4)
    assert fit.posterior()["beta"].shape == (200, 2)
    assert fit.locals()["z_mean"].shape == (60, 2)
    assert [row["name"] for row in fit.summary()] == ["beta[0]", "beta[1]"]


def test_fit_model_without_globals_writes_weights_and_locals(tmp_path):
    """deep_implicit: no globals; hidden units inferred, layer weights point-estimated."""
    model = himdsl.load("examples/deep_implicit/model.him")
    data, _ = model.simulate(rows=40, seed=0)
    fit = model.fit(data, steps=6, batch=8, samples=50, checks=False)   # 6 steps: no posterior
    paths = fit.save(str(tmp_path))
    assert "posterior" in paths and np.load(paths["posterior"]).files == []
    local = np.load(paths["locals"])
    assert local["z1_mean"].shape == (40, 128) and local["z2_sd"].shape == (40, 128)
    weights = np.load(paths["weights"])
    assert weights["z1.weight"].shape == (228, 128)
    assert not (tmp_path / "posterior.png").exists()


def test_model_without_observations_cannot_be_fit(tmp_path):
    model = tmp_path / "m.him"
    model.write_text("latent a ~ Normal(0, 1)\n")
    data = tmp_path / "d.npz"
    np.savez(data, a=np.zeros(1))
    code, text = _run("fit", model, data, "--out", tmp_path / "o")
    assert code == 2 and "observes no data, so there is nothing to fit" in text


def test_guide_override_accepts_bayesian_layer_weights():
    from himdsl.fitting import settings_for
    from himdsl.infer.guide_entries import resolve_guide

    model = himdsl.load("examples/bayes_gan/model.him")
    settings = settings_for(model, {"guide": {"h.weight": "point"}})
    assert resolve_guide(model.module(), settings.guide)["h.weight"] == "point"
    with pytest.raises(ValueError, match=r"latents: h.weight, h.bias, logits.weight, logits.bias"):
        resolve_guide(model.module(), {"w": "point"})


def test_guide_block_names_bayesian_layer_weights(tmp_path):
    from himdsl.fitting import settings_for

    source = Path("examples/bayes_gan/model.him").read_text()
    path = tmp_path / "bgan.him"
    path.write_text(source + "guide { h.weight ~ point; logits.bias ~ normal }\n")
    settings = settings_for(himdsl.load(path), {})
    assert settings.guide["h.weight"] == "point"
    assert settings.guide["logits.bias"] == "normal"
    path.write_text(source + "guide { h.wieght ~ point }\n")
    code, text = _run("check", path)
    assert code == 1 and "guide: `h.wieght` is not declared" in text and "`h.weight`" in text


def test_flow_options_in_the_guide_block_shape_the_flow(tmp_path):
    from himdsl.fitting import settings_for
    from himdsl.infer import GlobalGuide

    path = tmp_path / "m.him"
    path.write_text("model m\ndata x : real[2]\nlatent beta ~ Normal(0, 1) [2]\n"
                    "observe x ~ Normal(beta, 1) [2]\n"
                    "guide { beta ~ flow(layers = 2, hidden = [16]) }\n")
    model = himdsl.load(path)
    flow = GlobalGuide(model.module(), settings_for(model, {}).guide).families[0]
    assert len(flow.layers) == 2
    widths = [m.out_features for m in flow.layers[0].net if hasattr(m, "out_features")]
    assert widths[:-1] == [16]


def test_progress_counts_to_the_default_steps_when_none_are_given(hier_data, tmp_path, monkeypatch):
    import himdsl.fitting
    from himdsl.infer import TraceRow

    def fake_fit(model, data, overrides, device, out, resume, progress, announce=None, settings=None,
                 polish_progress=None):
        progress(TraceRow(300, 0.0, 1.0, 0.5, 1.0))   # 10 %: a plain line
        raise himdsl.fitting.FitError("stopped by the test")
    monkeypatch.setattr(himdsl.fitting, "run_fit", fake_fit)
    code, text = _run("fit", HIER, hier_data, "--out", tmp_path / "o")
    assert code == 2 and "300/3000" in text


def test_model_simulate_takes_point_estimates():
    model = himdsl.load("examples/deep_implicit/model.him")
    _, truth = model.simulate(rows=3, seed=0)
    weights = {k: v * 0 for k, v in truth.items() if "." in k}
    data, _ = model.simulate(rows=3, seed=0, params=weights)
    np.testing.assert_allclose(data["x"], 0.0)


def test_progress_bar_says_warm_up_instead_of_a_nan_elbo(capsys):
    """During the warm-up only the ratio trains, so there is no ELBO to show yet."""
    from himdsl.cli import ProgressBar
    from himdsl.infer.result import TraceRow

    bar = ProgressBar(10)
    bar.update(TraceRow(1, float("nan"), 0.69, 0.5, 0.1))
    bar.update(TraceRow(2, -3.25, 0.6, 0.6, 0.2))
    err = capsys.readouterr().err
    assert "ELBO (warm-up)" in err and "nan" not in err
    assert "ELBO -3.25" in err


def test_progress_bar_of_a_fit_without_a_ratio_shows_none(capsys):
    """Method vi uses the exact likelihood: its rows have no ratio loss or accuracy."""
    from himdsl.cli import ProgressBar
    from himdsl.infer.result import TraceRow

    bar = ProgressBar(10)
    bar.update(TraceRow(10, -3.25, float("nan"), float("nan"), 0.2))
    err = capsys.readouterr().err
    assert "ELBO -3.25  50 steps/s" in err and "ratio" not in err and "nan" not in err


def test_progress_bar_says_how_long_is_left(capsys):
    """At the rate so far: 2 of 10 steps in 4 s leave 8 steps at 0.5 a second."""
    from himdsl.cli import ProgressBar
    from himdsl.infer.result import TraceRow

    bar = ProgressBar(10)
    bar.update(TraceRow(2, -3.0, 0.6, 0.6, 4.0))
    bar.update(TraceRow(5, -3.0, 0.6, 0.6, 5_000.0))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("steps/s  0:16 left")
    assert lines[1].endswith("steps/s  1:23:20 left")


def test_progress_bar_explains_the_local_guide_training_on_after_the_loop(capsys):
    from himdsl.cli import ProgressBar
    from himdsl.infer.polish import PolishReport

    bar = ProgressBar(3000)
    bar.polish(PolishReport(0, 0.244, 0.244))
    bar.polish(PolishReport(250, 0.244, 0.081))
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["local guide alone, q(beta) held: 0 of at most 3000 steps; locals' means 0.244 sds "
                     "from their optimum (0.244 after the loop, target 0.05)",
                     "local guide alone, q(beta) held: 250 of at most 3000 steps; locals' means 0.081 sds "
                     "from their optimum (0.244 after the loop, target 0.05)"]
