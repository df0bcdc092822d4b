"""Trainer mechanics: settings validation, progress callback, NaN detection,
checkpoint resume, likelihood-based VI, result shapes. Models are compiled from
`.him` sources (tests/infer/models.py)."""
import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import himdsl

from himdsl.infer import FitSettings, NonFiniteLossError, RatioSettings, Trainer, fit
from tests.infer.models import (NARROW, compiled, explicit_linear_regression, gaussian_linear,
                                hier_gauss, hier_gauss_data,
                                linear_regression, linreg_data, point_regression,
                                point_regression_data, sbibm_task, two_moons)

TINY = dict(steps=40, batch=16, particles=4, simulations=32, log_every=10)

def test_settings_validation_names_the_key():
    with pytest.raises(ValueError, match="steps"):
        FitSettings(steps=0).validate()
    with pytest.raises(ValueError, match="ratio mode"):
        FitSettings(ratio=RatioSettings(mode="joint")).validate()
    with pytest.raises(ValueError, match="ratio loss"):
        FitSettings(ratio=RatioSettings(loss="l2")).validate()
    with pytest.raises(ValueError, match="`beta` is a global latent; its family must be one of"):
        Trainer(hier_gauss(), hier_gauss_data(n=20)[0], FitSettings(guide={"beta": "spline"}))
    with pytest.raises(ValueError, match="covering"):
        FitSettings(covering="sometimes").validate()
    with pytest.raises(ValueError, match="ratio_inputs"):
        FitSettings(ratio_inputs="beta").validate()


def test_annealed_likelihood_weight_grows_the_effective_rows_geometrically():
    data, _ = linreg_data(n=10_000)
    trainer = Trainer(linear_regression(), data, FitSettings(steps=110, warmup=10 / 110, anneal=0.5))
    weights = [trainer.schedule.temperature(k) for k in (10, 34, 59, 200)]   # first q step, p = ½, 1
    p = 25 / 50
    assert weights[0] == pytest.approx(10_000 ** (1 / 50 - 1) / 50)
    assert weights[1] == pytest.approx(p * 10_000 ** (p - 1))          # 50 effective rows
    assert weights[2:] == [1.0, 1.0]
    trainer = Trainer(two_moons(), sbibm_task("two_moons")[0],            # no plate: linear
                      FitSettings(steps=110, warmup=10 / 110, anneal=0.5, simulations=16))
    assert trainer.schedule.temperature(34) == pytest.approx(0.5)


def test_auto_local_guide_shares_the_support_of_relu_latents():
    module = compiled("deep_implicit")
    data = {"x": torch.randn(40, 10)}
    trainer = Trainer(module, data, FitSettings(**TINY))
    guide = trainer.local_guide
    assert not guide.has_density and guide.activations == ((0, 128, "relu"), (128, 256, "relu"))
    z, _ = guide.rsample(torch.randn(4, 40, 10), torch.zeros(4, 0))
    assert (z >= 0).all() and (z == 0).float().mean() > 0.05       # atoms at 0, like relu units
    gaussian = Trainer(compiled("deep_implicit"), data, FitSettings(guide={"z2": "gaussian"}, **TINY))
    assert gaussian.local_guide.has_density                        # an explicit choice is kept


def test_implicit_guide_applies_each_blocks_function_to_its_slice_only():
    from himdsl.infer.local_guide import ImplicitLocalGuide
    torch.manual_seed(0)
    guide = ImplicitLocalGuide(3, 0, 6, activations=((2, 4, "sigmoid"),))
    z, _ = guide.rsample(torch.randn(2, 500, 3), torch.zeros(2, 0))
    assert ((z[..., 2:4] > 0) & (z[..., 2:4] < 1)).all()
    assert (z[..., :2] < 0).any() and (z[..., 4:] > 1).any() | (z[..., 4:] < 0).any()


def test_callback_gets_trace_rows_and_result_has_shapes():
    data, _ = hier_gauss_data(n=50)
    rows = []
    result = fit(hier_gauss(), data, FitSettings(**TINY), callback=rows.append)
    assert [r.step for r in rows] == [10, 20, 30, 40]
    assert all(np.isfinite(r.ratio_loss) and 0 <= r.ratio_acc <= 1 for r in rows)
    assert result.posterior(7)["beta"].shape == (7, 2)
    local = result.locals(data, draws=8)
    assert local["z_mean"].shape == (50, 2) and local["z_sd"].shape == (50, 2)
    assert set(result.summary()) == {"beta[0]", "beta[1]"}
    assert result.mode == "contrastive" and result.plan.ratio == "contrastive"


def test_non_finite_loss_names_the_step():
    data, _ = hier_gauss_data(n=50)
    trainer = Trainer(hier_gauss(), data, FitSettings(**TINY))
    trainer.objective.row_terms = lambda globals, rows, s, **_: torch.full(
        (s, trainer.view.rows_in(rows)), float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"at step 4 .*elbo = nan"):
        trainer.run()


def test_nan_in_data_is_reported():
    data, _ = hier_gauss_data(n=50)
    data["x"][3, 1] = float("nan")
    with pytest.raises(ValueError, match="`x` contains NaN"):
        fit(hier_gauss(), data, FitSettings(**TINY))


def _hier_gauss_small():
    return hier_gauss(), hier_gauss_data(n=50)[0]


def _gaussian_linear():
    return gaussian_linear(), sbibm_task("gaussian_linear")[0]


def _point_regression():
    from tests.infer.models import point_regression, point_regression_data
    return point_regression(), point_regression_data(n=50)


NUMPY_EXTERN = """
model numpy_extern
extern jitter(mu : real) -> real from "jitter.py"
data y : real
latent mu ~ Normal(0, 1)
plate n over y {
    observe y = jitter(mu)
}
"""
JITTER = """
import numpy as np
import torch

def jitter(mu):
    return mu + torch.from_numpy(np.random.standard_normal(tuple(mu.shape))).to(mu.dtype)
"""


@functools.lru_cache(maxsize=None)
def _extern_folder() -> Path:
    folder = Path(tempfile.mkdtemp())
    (folder / "jitter.py").write_text(JITTER)
    (folder / "model.him").write_text(NUMPY_EXTERN)
    return folder


def _numpy_extern():
    """A model whose extern draws from numpy's global generator."""
    model = himdsl.load(str(_extern_folder() / "model.him")).module()
    return model, {"y": torch.linspace(-1, 1, 30)}


@pytest.mark.parametrize("make, extra", [
    (_hier_gauss_small, {}), (_gaussian_linear, {}), (_point_regression, {}),
    (_gaussian_linear, {"reuse": 2, "budget": 2000}), (_numpy_extern, {})],
    ids=["contrastive-with-locals", "contrastive-with-particles", "empirical", "reuse",
         "numpy-extern"])
def test_resume_from_checkpoint_reproduces_an_uninterrupted_run(tmp_path, make, extra):
    """Also with the covering population, the moving averages, the stored simulations
    of `reuse` and numpy's generator, which the checkpoint holds."""
    model, data = make()
    settings = dict(TINY, checkpoint_every=20, **extra)
    np.random.seed(0)
    straight = fit(model, data, FitSettings(**settings))

    def stop_at_20(row):
        if row.step == 20:
            raise KeyboardInterrupt
    path = str(tmp_path / "fit.ckpt")
    np.random.seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(make()[0], data, FitSettings(**settings), callback=stop_at_20, checkpoint_path=path)
    np.random.seed(123)           # the checkpoint restores numpy's state, whatever it is now
    resumed = fit(make()[0], data, FitSettings(**settings), checkpoint_path=path, resume=True)
    for a, b in zip(straight.global_guide.parameters(), resumed.global_guide.parameters()):
        assert torch.equal(a, b)
    assert [r.step for r in resumed.trace] == [10, 20, 30, 40]


def test_checkpoint_is_plain_data(tmp_path):
    """A checkpoint loads with weights_only=True: it holds no pickled code."""
    model, data = _hier_gauss_small()
    path = str(tmp_path / "fit.ckpt")
    fit(model, data, FitSettings(**TINY), checkpoint_path=path)
    blob = torch.load(path, weights_only=True)
    assert blob["state"]["step"] == TINY["steps"] and blob["plan"]["ratio"] == "contrastive"


def test_a_checkpoint_whose_ratio_optimiser_differs_is_refused_with_a_reason(tmp_path):
    """A checkpoint from a version whose ratio optimiser had other parameter groups
    (e.g. the MLP's decaying weights apart) is named as another version's."""
    model, data = _hier_gauss_small()
    path = str(tmp_path / "fit.ckpt")
    fit(model, data, FitSettings(**TINY), checkpoint_path=path)
    blob = torch.load(path, weights_only=True)
    blob["r_opt"]["param_groups"].append(dict(blob["r_opt"]["param_groups"][0], params=[]))
    torch.save(blob, path)
    with pytest.raises(ValueError, match="written by another version of himdsl"):
        fit(model, data, FitSettings(**dict(TINY, steps=60)), checkpoint_path=path, resume=True)


def test_a_checkpoint_whose_networks_have_other_shapes_is_refused_with_a_reason(tmp_path):
    """hier_gauss's two-coordinate locals had a diagonal guide before its covariance
    was full: its checkpoints' guide network has fewer outputs."""
    model, data = _hier_gauss_small()
    path = str(tmp_path / "fit.ckpt")
    fit(model, data, FitSettings(**TINY), checkpoint_path=path)
    blob = torch.load(path, weights_only=True)
    guide = blob["modules"]["local"]
    last = max(k for k in guide if k.startswith("net.") and k.endswith(".weight"))
    guide[last] = guide[last][:-1]
    guide[last.replace("weight", "bias")] = guide[last.replace("weight", "bias")][:-1]
    torch.save(blob, path)
    with pytest.raises(ValueError, match="written by another version of himdsl"):
        fit(model, data, FitSettings(**dict(TINY, steps=60)), checkpoint_path=path, resume=True)


def test_resume_extends_a_finished_run_to_more_steps(tmp_path):
    data, _ = hier_gauss_data(n=50)
    path = str(tmp_path / "fit.ckpt")
    short = dict(TINY, checkpoint_every=20)
    fit(hier_gauss(), data, FitSettings(**short), checkpoint_path=path)
    longer = FitSettings(**dict(short, steps=short["steps"] + 20))
    resumed = fit(hier_gauss(), data, longer, checkpoint_path=path, resume=True)
    steps = [r.step for r in resumed.trace]
    assert steps[-1] == longer.steps and steps[:len(steps) - 2] == list(range(10, 41, 10))
    with pytest.raises(ValueError, match=r"different settings \(lr\)"):
        fit(hier_gauss(), data, FitSettings(**dict(short, steps=80, lr=0.5)),
            checkpoint_path=path, resume=True)
    with pytest.raises(ValueError, match="past the 20 steps"):
        fit(hier_gauss(), data, FitSettings(**dict(short, steps=20)), checkpoint_path=path,
            resume=True)


def test_resuming_a_finished_fit_judges_it_as_the_fit_did(tmp_path):
    """Resumed at its own length, a fit that has finished runs no step and must end
    with the same verdict: q's trace over the final quarter is in the checkpoint, so
    "q settled" and "ratio is a likelihood" are not skipped as for a smoke run (they
    were, and an untrusted fit resumed with the same --steps came out trusted)."""
    data, _ = hier_gauss_data(n=50)
    path = str(tmp_path / "fit.ckpt")
    settings = FitSettings(**dict(TINY, steps=80, checkpoint_every=20))
    first = fit(hier_gauss(), data, settings, checkpoint_path=path)
    again = fit(hier_gauss(), data, settings, checkpoint_path=path, resume=True)
    judged = {c.name: c.value for c in first.verdict.checks}
    assert {"q settled", "ratio is a likelihood"} <= set(judged)
    assert {c.name: c.value for c in again.verdict.checks} == judged
    blob = torch.load(path, weights_only=True)
    del blob["moments"]                  # a checkpoint written before the trace was kept
    torch.save(blob, path)
    legacy = fit(hier_gauss(), data, settings, checkpoint_path=path, resume=True)
    settled = next(c for c in legacy.verdict.checks if c.name == "q settled")
    assert not settled.ok and "not traced" in settled.message and not legacy.verdict.ok


def test_reuse_adds_ratio_updates_on_stored_simulations():
    from himdsl.infer.pair_store import REPLAY_STEPS

    obs, _ = sbibm_task("gaussian_linear")
    trainer = Trainer(gaussian_linear(), obs, FitSettings(**dict(TINY, reuse=2)))
    trainer.run()
    updates = trainer.plan.ratio_updates
    adam = trainer.ratio.opt.state[next(iter(trainer.ratio.net.parameters()))]
    assert int(adam["step"]) == (updates + 2) * TINY["steps"]      # fresh + two replayed a step
    assert len(trainer.ratio.store.train) == min(updates * TINY["steps"], REPLAY_STEPS)


def test_method_vi_fits_an_explicit_model():
    data, truth = linreg_data(n=200)
    module = explicit_linear_regression()
    result = fit(module, data, FitSettings(steps=600, guide={"w": "mvnormal"}))
    assert result.plan.method == "vi" and result.plan.ratio is None
    w = result.posterior(2000)["w"]
    assert np.all(np.abs(w.mean(0) - truth["w_mean"]) < 0.5 * truth["w_sd"] + 0.01)


def test_a_flow_fitted_to_every_row_keeps_the_posteriors_width():
    """q starts 40 posterior sds from a 500-row regression's posterior: a flow whose
    splines shaped q from the first step pinned w[0]'s mass against a spline's bound
    (sd 0.01 of the exact one); fitted moments first, then shape, it has every sd."""
    data, truth = linreg_data(n=500)
    result = fit(explicit_linear_regression(), data, FitSettings(steps=1200, batch=500, seed=0))
    assert result.plan.global_families == ((("w",), "flow"),) and result.plan.flow_shape_from == 400
    w = result.posterior(8000)["w"]
    assert np.all(np.abs(w.std(0) / truth["w_sd"] - 1) < 0.1)
    assert np.all(np.abs(w.mean(0) - truth["w_mean"]) < 0.2 * truth["w_sd"])


def test_reported_elbo_leaves_out_the_covering_term(monkeypatch):
    """The covering term's weight changes q's loss, not the ELBO the trace reports:
    at the first q step (same seed, identical ratio and q so far) two weights report
    the same value."""
    from himdsl.infer import objective

    obs, _ = sbibm_task("two_moons")
    reported, losses = [], []
    for weight in (1.0, 1000.0):
        monkeypatch.setattr(objective, "COVERING_WEIGHT", weight)
        trainer = Trainer(two_moons(), obs, FitSettings(**dict(TINY, warmup=0.25)))
        while trainer.state.step <= trainer.plan.warmup_steps:
            out = trainer.step()
        reported.append(float(out["elbo"]))
        losses.append(float(out["q_loss"]))
    assert reported[0] == pytest.approx(reported[1], rel=1e-6)
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)


def test_non_finite_covering_term_stops_the_run_at_its_step():
    """The covering term is not part of the reported ELBO, but a NaN in it is still
    caught at the step where it happened, named as q's loss."""
    obs, _ = sbibm_task("two_moons")
    trainer = Trainer(two_moons(), obs, FitSettings(**dict(TINY, warmup=0.25)))
    trainer.covering.forward_kl = lambda: torch.tensor(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"at step 10 .*q_loss = nan"):
        trainer.run()


def test_explicit_model_is_fitted_by_vi_without_being_told():
    data, _ = linreg_data(n=50)
    trainer = Trainer(explicit_linear_regression(), data, FitSettings(**TINY))
    assert trainer.plan.method == "vi" and trainer.ratio is None and trainer.mode == "exact"
    forced = Trainer(explicit_linear_regression(), data, FitSettings(method="lfvi", **TINY))
    assert forced.plan.method == "lfvi" and forced.plan.ratio == "contrastive"
    with pytest.raises(ValueError, match="method vi needs"):
        Trainer(linear_regression(), data, FitSettings(method="vi", **TINY))


def test_no_checkpoint_is_written_from_a_state_with_a_nan(tmp_path, monkeypatch):
    """A loss turns NaN at step 5, between log points: the checkpoint on disk stays the
    one of step 4, which a fit can continue from."""
    from himdsl.infer.checkpoint import read_checkpoint

    trainer = Trainer(hier_gauss(), hier_gauss_data(n=50)[0],
                      FitSettings(**dict(TINY, checkpoint_every=1, log_every=50)))
    step = trainer.objective.step

    def poisoned(*args):
        elbo, loss = step(*args)
        return (elbo * float("nan"), loss) if trainer.state.step == 5 else (elbo, loss)
    monkeypatch.setattr(trainer.objective, "step", poisoned)
    path = str(tmp_path / "ckpt.pt")
    with pytest.raises(NonFiniteLossError, match="NaN or inf at step 5"):
        trainer.run(checkpoint_path=path)
    saved = read_checkpoint(path)
    assert saved["state"]["step"] == 5 and all(
        torch.isfinite(v).all() for v in saved["modules"]["global"].values())


def test_parameters_that_run_away_without_a_nan_end_the_fit(tmp_path):
    """Weights of 1e5 never make a NaN, but no fit continues sensibly from them."""
    trainer = Trainer(point_regression(), point_regression_data(n=50),
                      FitSettings(**dict(TINY, checkpoint_every=10)))
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(1e5)
    with pytest.raises(NonFiniteLossError, match="reached 1e"):
        trainer.run(checkpoint_path=str(tmp_path / "ckpt.pt"))
    assert not (tmp_path / "ckpt.pt").exists()


def test_parameter_average_keeps_each_half_of_its_window():
    """The final quarter's two halves (what "ELBO settled" compares) are the plain
    averages of their steps' parameters, and survive a checkpoint."""
    from himdsl.infer.schedule import ParameterAverage

    module = torch.nn.Linear(1, 1, bias=False)
    average = ParameterAverage(start=6, end=14)            # halves: steps 6–9, 10–13
    for k in range(14):
        module.weight.data.fill_(float(k))
        average.update(k, {"m": module})
    restored = ParameterAverage(start=6, end=14)
    restored.load_state_dict(average.state_dict())
    first, second = restored.halves({"m": module})
    assert float(first["m"].weight.detach()) == pytest.approx(7.5)
    assert float(second["m"].weight.detach()) == pytest.approx(11.5)
    assert float(restored.averaged_copies({"m": module})["m"].weight.detach()) == pytest.approx(9.5)
    assert ParameterAverage(start=6, end=14).halves({"m": module}) is None


def test_a_new_ratio_network_starts_in_its_pairs_units_and_resumes_across_it(tmp_path):
    """Standardised by prior simulations, a likelihood 0.1 wide under a prior 20 wide
    is a sliver of each input. The contrastive ratio's inputs follow its pairs to
    the data, and once they have narrowed 2x a new network starts in their units
    (ratio.StagedRatio) and trains with the others, Adam over each in its own
    group. A checkpoint taken between new networks restores them all, the
    optimiser and the average."""
    data = {"x": torch.tensor([3.0, -2.0])}

    def make():
        return compiled("narrow.him", NARROW)
    settings = FitSettings(steps=240, simulations=64, particles=32, checkpoint_every=20, seed=0)
    trainer = Trainer(make(), data, settings)
    net = trainer.ratio.net
    assert net.head.scale.sd.min() > 5 and len(net.stages) == 1          # the prior's units
    straight = trainer.run()
    head = net.head
    assert len(net.stages) >= 2 and head.origin_sd.max() < 2             # a network born narrow
    assert head.scale.bound is not None and net.stages[0].scale.bound is None
    assert torch.allclose(head.scale.mean, torch.tensor([3.0, -2.0] * 2), atol=0.5)
    groups = trainer.ratio.opt.param_groups
    assert len(groups) == len(net.stages)
    for group, stage in zip(groups, net.stages):
        assert all(p is q for p, q in zip(group["params"], stage.parameters()))
        assert all(p.requires_grad for p in stage.parameters())
    averaged = trainer.ratio.average.average
    assert len(averaged.stages) == len(net.stages)
    torch.testing.assert_close(averaged.head.scale.sd, head.scale.sd)

    def stop_at_160(row):
        if row.step >= 160:
            raise KeyboardInterrupt
    path = str(tmp_path / "fit.ckpt")
    with pytest.raises(KeyboardInterrupt):
        fit(make(), data, settings, callback=stop_at_160, checkpoint_path=path)
    resumed = fit(make(), data, settings, checkpoint_path=path, resume=True)
    for a, b in zip(straight.global_guide.parameters(), resumed.global_guide.parameters()):
        assert torch.equal(a, b)
