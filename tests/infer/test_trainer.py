"""Trainer mechanics: settings validation, ratio-mode choice, progress callback,
NaN detection, checkpoint resume, likelihood-based VI, result shapes."""
import numpy as np
import pytest
import torch

import himdsl
from himdsl.infer import (FitSettings, NonFiniteLossError, RatioSettings, Trainer, fit,
                          resolve_mode)
from himdsl.infer.trainer import resolve_ratio_inputs
from himdsl.infer.data import ModelView
from tests.infer.models import (GaussianLinear, HierGauss, LinReg, TwoMoons, hier_gauss_data,
                                linreg_data, probit_data, probit_module, sbibm_task)

TINY = dict(steps=40, batch=16, particles=4, simulations=32, log_every=10)


def test_settings_validation_names_the_key():
    with pytest.raises(ValueError, match="steps"):
        FitSettings(steps=0).validate()
    with pytest.raises(ValueError, match="ratio mode"):
        FitSettings(ratio=RatioSettings(mode="joint")).validate()
    with pytest.raises(ValueError, match="ratio loss"):
        FitSettings(ratio=RatioSettings(loss="l2")).validate()
    with pytest.raises(ValueError, match="guide family"):
        FitSettings(guide={"beta": "spline"}).validate()


def test_auto_mode_empirical_only_with_locals_or_point_parameters():
    data, _ = hier_gauss_data(n=100)
    assert resolve_mode("auto", ModelView(HierGauss(), data)) == "empirical"
    obs, _ = sbibm_task("gaussian_linear")
    assert resolve_mode("auto", ModelView(GaussianLinear(), obs)) == "contrastive"
    rows, _ = linreg_data(n=500)
    assert resolve_mode("auto", ModelView(LinReg(), rows)) == "contrastive"
    assert resolve_mode("auto", ModelView(LinReg(), rows), has_params=True) == "empirical"


def test_auto_ratio_inputs_read_the_prediction_only_for_many_globals():
    gan = himdsl.load("examples/bayes_gan/model.him").module()         # 386 weights
    rows = {"x": torch.randn(20, 5), "y": torch.randint(2, (20,))}
    assert resolve_ratio_inputs("auto", ModelView(gan, rows)) == "prediction"
    assert resolve_ratio_inputs("globals", ModelView(gan, rows)) == "globals"
    data, _ = probit_data(n=50)                                        # 2 globals
    assert resolve_ratio_inputs("auto", ModelView(probit_module(), data)) == "globals"
    hier, _ = hier_gauss_data(n=50)                                    # no prediction
    assert resolve_ratio_inputs("auto", ModelView(HierGauss(), hier)) == "globals"
    with pytest.raises(ValueError, match="prediction needs a plate"):
        Trainer(HierGauss(), hier, FitSettings(ratio_inputs="prediction"))
    with pytest.raises(ValueError, match="ratio_inputs"):
        FitSettings(ratio_inputs="beta").validate()


def test_prediction_inputs_size_the_ratio_and_train_in_both_modes():
    data, _ = probit_data(n=60)
    for mode in ("empirical", "contrastive"):
        trainer = Trainer(probit_module(), data, FitSettings(ratio_inputs="prediction",
                                                             ratio=RatioSettings(mode=mode), **TINY))
        assert trainer.ratio.scale.mean.shape == (3 + 1,)              # x, one-hot y, f
        trainer.run()
        assert np.isfinite(trainer.result().posterior(10)["a"]).all()


IID_SOURCE = """
model iid
data x : real
latent mu ~ Normal(0, 1)
plate n over x {
    noise e ~ Normal(0, 1)
    observe x = mu + e
}
"""


def test_contrastive_ratio_over_rows_without_covariates_sees_one_row_per_global_draw():
    iid = himdsl.load("iid.him", source=IID_SOURCE).module()
    trainer = Trainer(iid, {"x": np.zeros(30, np.float32)}, FitSettings(**TINY))
    rows, draws = trainer._ratio_batch()
    assert trainer.mode == "contrastive" and draws == TINY["simulations"] and len(rows["x"]) == 1
    data, _ = linreg_data(n=30)                                        # covariates: rows matter
    trainer = Trainer(LinReg(), data, FitSettings(**TINY))
    rows, draws = trainer._ratio_batch()
    assert draws == TINY["particles"] and len(rows["y"]) == TINY["batch"]


def test_annealed_likelihood_weight_grows_the_effective_rows_geometrically():
    data, _ = linreg_data(n=10_000)
    trainer = Trainer(LinReg(), data, FitSettings(steps=110, warmup=10 / 110, anneal=0.5))
    weights = []
    for step in (10, 34, 59, 200):                     # first q step, p = 1/2, p = 1, after
        trainer.state.step = step
        weights.append(trainer._temperature())
    p = 25 / 50
    assert weights[0] == pytest.approx(10_000 ** (1 / 50 - 1) / 50)
    assert weights[1] == pytest.approx(p * 10_000 ** (p - 1))          # 50 effective rows
    assert weights[2:] == [1.0, 1.0]
    trainer = Trainer(TwoMoons(), sbibm_task("two_moons")[0],            # no plate: linear
                      FitSettings(steps=110, warmup=10 / 110, anneal=0.5, simulations=16))
    trainer.state.step = 34
    assert trainer._temperature() == pytest.approx(0.5)


def test_auto_local_guide_shares_the_support_of_relu_latents():
    module = himdsl.load("examples/deep_implicit/model.him").module()
    data = {"x": torch.randn(40, 10)}
    trainer = Trainer(module, data, FitSettings(**TINY))
    guide = trainer.local_guide
    assert not guide.has_density and guide.activations == ((0, 128, "relu"), (128, 256, "relu"))
    z, _ = guide.rsample(torch.randn(4, 40, 10), torch.zeros(4, 0))
    assert (z >= 0).all() and (z == 0).float().mean() > 0.05       # atoms at 0, like relu units
    gaussian = Trainer(himdsl.load("examples/deep_implicit/model.him").module(), data,
                       FitSettings(guide={"z2": "gaussian"}, **TINY))
    assert gaussian.local_guide.has_density                        # an explicit choice is kept


def test_implicit_guide_applies_each_blocks_function_to_its_slice_only():
    from himdsl.infer.local_guide import ImplicitLocalGuide
    torch.manual_seed(0)
    guide = ImplicitLocalGuide(3, 0, 6, activations=((2, 4, "sigmoid"),))
    z, _ = guide.rsample(torch.randn(2, 500, 3), torch.zeros(2, 0))
    assert ((z[..., 2:4] > 0) & (z[..., 2:4] < 1)).all()
    assert (z[..., :2] < 0).any() and (z[..., 4:] > 1).any() | (z[..., 4:] < 0).any()


def test_contrastive_mode_refuses_local_latents():
    data, _ = hier_gauss_data(n=100)
    with pytest.raises(ValueError, match="local latents"):
        Trainer(HierGauss(), data, FitSettings(ratio=RatioSettings(mode="contrastive")))


def test_callback_gets_trace_rows_and_result_has_shapes():
    data, _ = hier_gauss_data(n=50)
    rows = []
    result = fit(HierGauss(), data, FitSettings(**TINY), callback=rows.append)
    assert [r.step for r in rows] == [10, 20, 30, 40]
    assert all(np.isfinite(r.ratio_loss) and 0 <= r.ratio_acc <= 1 for r in rows)
    assert result.posterior(7)["beta"].shape == (7, 2)
    local = result.locals(data, draws=8)
    assert local["z_mean"].shape == (50, 2) and local["z_sd"].shape == (50, 2)
    assert set(result.summary()) == {"beta[0]", "beta[1]"}
    assert result.mode == "empirical"


class NaNGauss(HierGauss):
    def simulate(self, globals, covariates=None, rows=None):
        sim = super().simulate(globals, covariates, rows)
        return {"z": sim["z"], "x": sim["x"] * float("nan")}


def test_non_finite_loss_names_the_step():
    data, _ = hier_gauss_data(n=50)
    with pytest.raises(NonFiniteLossError, match="at step 0"):
        fit(NaNGauss(), data, FitSettings(**TINY))


def test_nan_in_data_is_reported():
    data, _ = hier_gauss_data(n=50)
    data["x"][3, 1] = float("nan")
    with pytest.raises(ValueError, match="`x` contains NaN"):
        fit(HierGauss(), data, FitSettings(**TINY))


def _hier_gauss_small():
    return HierGauss(), hier_gauss_data(n=50)[0]


def _gaussian_linear():
    return GaussianLinear(), sbibm_task("gaussian_linear")[0]


@pytest.mark.parametrize("make", [_hier_gauss_small, _gaussian_linear],
                         ids=["empirical", "contrastive-with-particles"])
def test_resume_from_checkpoint_reproduces_an_uninterrupted_run(tmp_path, make):
    """Also with the contrastive ratio's particle population, which the checkpoint holds."""
    model, data = make()
    settings = dict(TINY, checkpoint_every=20)
    straight = fit(model, data, FitSettings(**settings))

    def stop_at_20(row):
        if row.step == 20:
            raise KeyboardInterrupt
    path = str(tmp_path / "fit.ckpt")
    with pytest.raises(KeyboardInterrupt):
        fit(make()[0], data, FitSettings(**settings), callback=stop_at_20, checkpoint_path=path)
    resumed = fit(make()[0], data, FitSettings(**settings), checkpoint_path=path, resume=True)
    for a, b in zip(straight.global_guide.parameters(), resumed.global_guide.parameters()):
        assert torch.equal(a, b)
    assert [r.step for r in resumed.trace] == [10, 20, 30, 40]


def test_resume_extends_a_finished_run_to_more_steps(tmp_path):
    data, _ = hier_gauss_data(n=50)
    path = str(tmp_path / "fit.ckpt")
    short = dict(TINY, checkpoint_every=20)
    fit(HierGauss(), data, FitSettings(**short), checkpoint_path=path)
    longer = FitSettings(**dict(short, steps=short["steps"] + 20))
    resumed = fit(HierGauss(), data, longer, checkpoint_path=path, resume=True)
    steps = [r.step for r in resumed.trace]
    assert steps[-1] == longer.steps and steps[:len(steps) - 2] == list(range(10, 41, 10))
    with pytest.raises(ValueError, match=r"different settings \(lr\)"):
        fit(HierGauss(), data, FitSettings(**dict(short, steps=80, lr=0.5)),
            checkpoint_path=path, resume=True)
    with pytest.raises(ValueError, match="past the 20 steps"):
        fit(HierGauss(), data, FitSettings(**dict(short, steps=20)), checkpoint_path=path,
            resume=True)


def test_reuse_adds_ratio_updates_on_stored_simulations():
    from himdsl.infer.trainer import REPLAY_STEPS

    obs, _ = sbibm_task("gaussian_linear")
    trainer = Trainer(GaussianLinear(), obs, FitSettings(**dict(TINY, reuse=2)))
    trainer.run()
    adam = trainer.r_opt.state[next(iter(trainer.ratio.parameters()))]
    assert int(adam["step"]) == 7 * TINY["steps"]          # five fresh (no plate) + two replayed
    assert len(trainer._replay) == min(5 * TINY["steps"], REPLAY_STEPS)   # five batches a step
    data, _ = hier_gauss_data(n=50)                 # a plate: one fresh update; empirical: no replay
    trainer = Trainer(HierGauss(), data, FitSettings(**dict(TINY, reuse=2)))
    trainer.run()
    assert int(trainer.r_opt.state[next(iter(trainer.ratio.parameters()))]["step"]) == TINY["steps"]


def test_method_vi_fits_an_explicit_model():
    data, truth = linreg_data(n=200)
    result = fit(LinReg(), data, FitSettings(steps=600, method="vi", guide={"w": "mvnormal"}))
    w = result.posterior(2000)["w"]
    assert np.all(np.abs(w.mean(0) - truth["w_mean"]) < 0.5 * truth["w_sd"] + 0.01)


def test_reported_elbo_leaves_out_the_covering_term():
    """The covering term's weight changes q's loss, not the ELBO the trace reports:
    at the first q step (same seed, identical ratio and q so far) two weights report
    the same value."""
    obs, _ = sbibm_task("two_moons")
    reported = []
    for cover in (1.0, 1000.0):
        trainer = Trainer(TwoMoons(), obs, FitSettings(**dict(TINY, cover=cover, warmup=0.25)))
        while trainer.state.step <= trainer._warmup_steps():
            out = trainer.step()
        reported.append(float(out["elbo"]))
    assert reported[0] == pytest.approx(reported[1], rel=1e-6)


def test_non_finite_covering_term_stops_the_run_at_its_step():
    """The covering term is not part of the reported ELBO, but a NaN in it is still
    caught at the step where it happened, named as q's loss."""
    obs, _ = sbibm_task("two_moons")
    trainer = Trainer(TwoMoons(), obs, FitSettings(**dict(TINY, warmup=0.25)))
    trainer._forward_kl = lambda: torch.tensor(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"at step 10 .*q_loss = nan"):
        trainer.run()
