"""Every FitSettings knob changes what the trainer does: each test below would fail
if its setting were ignored."""
import pytest
import torch

from himdsl.infer import FitSettings, RatioSettings, Trainer, fit
from himdsl.infer.plan import LOCAL_SAMPLES
from himdsl.infer.ratio import classifier_loss, pair_loss
from tests.infer.models import (explicit_linear_regression, gaussian_linear, hier_gauss, hier_gauss_data,
                                sbibm_task)

TINY = dict(steps=20, batch=16, particles=4, simulations=32, log_every=10)


def _hier(**settings):
    return Trainer(hier_gauss(), hier_gauss_data(n=60)[0], FitSettings(**{**TINY, **settings}))


def _linear(**settings):
    return Trainer(gaussian_linear(), sbibm_task("gaussian_linear")[0], FitSettings(**{**TINY, **settings}))


def _lr(opt):
    return opt.param_groups[0]["lr"]


def test_steps_samples_and_log_every():
    result = fit(hier_gauss(), hier_gauss_data(n=60)[0], FitSettings(**dict(TINY, steps=30, log_every=15,
                                                                         samples=77)))
    assert [r.step for r in result.trace] == [15, 30]
    assert result.posterior()["beta"].shape == (77, 2)


def test_batch_and_particles():
    trainer = _hier(batch=8, particles=3)
    assert len(trainer.batch_rows()["x"]) == 8
    assert trainer._q_draws()[0]["beta"].shape == (3, 2)


def test_learning_rates_and_their_decay():
    trainer = _hier(lr=0.05, ratio_lr=0.002, final_lr=0.2, warmup=0.0)
    trainer.step()
    assert _lr(trainer.q_opt) == pytest.approx(0.05) and _lr(trainer.ratio.opt) == pytest.approx(0.002)
    trainer.schedule.set_lr(TINY["steps"], [(trainer.q_opt, 0.05)])
    assert _lr(trainer.q_opt) == pytest.approx(0.05 * 0.2)


def test_seed():
    a, b, c = _hier(seed=1), _hier(seed=1), _hier(seed=2)
    first = [next(t.ratio.net.parameters()) for t in (a, b, c)]
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])


def test_ratio_hidden_loss_and_contrast():
    trainer = _hier(ratio=RatioSettings(hidden=(7, 5), loss="hinge"), contrast="single")
    assert trainer.ratio.net.head.net[0].out_features == 7 and trainer.ratio.net.head.net[2].out_features == 5
    true, other, ok = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0]), torch.ones(2, dtype=torch.bool)
    assert torch.allclose(trainer.ratio._judge(true, other, ok)[0], classifier_loss(true, other, "hinge")[0])
    plain = _hier()
    assert torch.allclose(plain.ratio._judge(true, other, ok)[0], pair_loss(true, other, "log")[0])


def test_ratio_mode_method_guide_inputs_and_gradient():
    assert _hier(ratio=RatioSettings(mode="empirical")).plan.ratio == "empirical"
    assert _hier(guide={"beta": "normal"}).global_guide.kinds == ["normal"]
    assert _hier(guide={"z": "implicit"}).plan.local_guide == "implicit"
    assert _hier(global_gradient="elbo").plan.global_gradient == "elbo"
    data = {"f": torch.randn(20, 3), "y": torch.randn(20)}
    explicit = Trainer(explicit_linear_regression(), data, FitSettings(method="lfvi", **TINY))
    assert explicit.plan.method == "lfvi"
    assert _hier(ratio_inputs="parents").plan.ratio_inputs == "parents"


def test_warmup_trains_only_the_ratio():
    trainer = _hier(warmup=0.5)
    assert trainer.plan.warmup_steps == 10
    assert "elbo" not in trainer.step() and trainer.state.step == 1


def test_ratio_updates_and_simulations():
    trainer = _hier(ratio_updates=3, simulations=24, warmup=0.0)
    trainer.step()
    adam = trainer.ratio.opt.state[next(iter(trainer.ratio.net.parameters()))]
    assert int(adam["step"]) == 3
    with torch.no_grad():
        assert trainer.ratio._pairs(None)[0].shape[0] == 24


def test_spread_widens_the_ratios_globals():
    narrow, wide = _linear(covering="off", spread=1.0), _linear(covering="off", spread=2.0)
    u = narrow.global_guide.rsample(256)[2].detach()
    assert torch.allclose(wide.proposal.width(u), 2 * narrow.proposal.width(u))


def test_prior_mix_draws_the_ratios_globals_from_the_prior():
    """All-prior independent pairs spread like the prior; none, like q (narrow at the start)."""
    spreads = []
    for mix in (0.0, 1.0):
        trainer = _linear(covering="off", prior_mix=mix, spread=0.0, simulations=512)
        u, _ = trainer.ratio._global_pairs(512, None)
        spreads.append(float(u[:128].std()))
    assert spreads[1] > 5 * spreads[0]


def test_anneal_average_and_ratio_ema():
    trainer = _hier(anneal=0.5, average=0.5, ratio_ema=0.0)
    assert trainer.schedule.temperature(trainer.plan.warmup_steps) < 1
    assert trainer.plan.average_from == 10
    assert trainer.ratio.average.average is trainer.ratio.net
    assert _hier(ratio_ema=0.5).ratio.average.average is not _hier(ratio_ema=0.5).ratio.net


@pytest.mark.parametrize("cap", [0.5, 0.99])
def test_ratio_ema_caps_the_averages_decay(cap):
    """Updates at step k decay by min(ratio_ema, (1 + k) / (10 + k)): after a step
    change of the network, the average has moved 1 − Π decay of it."""
    from himdsl.infer.schedule import RatioAverage

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    average = RatioAverage(net, cap)
    with torch.no_grad():
        net.weight.fill_(1.0)
    steps = range(1000, 1100)
    for k in steps:
        average.update(k)
    kept = torch.tensor([min(cap, (1 + k) / (10 + k)) for k in steps], dtype=torch.float64).prod()
    assert float(average.average.weight) == pytest.approx(1 - float(kept), rel=1e-4)


def test_covering_and_budget():
    assert _linear(covering="off").covering is None and _linear().covering is not None
    trainer = _linear(budget=1024 + 64, simulations=32, steps=10)
    trainer.run()
    assert int(trainer.ratio.simulated) <= 64


def test_checks_and_checkpoint_every(tmp_path, monkeypatch):
    from himdsl.infer import trainer as trainer_module

    saved = []
    monkeypatch.setattr(trainer_module, "save_checkpoint", lambda t, path: saved.append(t.state.step))
    result = fit(hier_gauss(), hier_gauss_data(n=60)[0], FitSettings(**dict(TINY, checks=False,
                                                                         checkpoint_every=5)),
                 checkpoint_path=str(tmp_path / "c.pt"))
    # the last: the local guide, polished after the loop (20 steps leave it far out)
    assert result.verdict is None and saved == [5, 10, 15, 20, 20]


def test_local_samples_weigh_several_draws_of_the_locals_a_row():
    """With L draws a row the q step's per-row term is log (1/L) Σ exp(ℓ_l) over L
    draws of each row's locals."""
    trainer = _hier(local_samples=4)
    assert trainer.plan.local_samples == 4 and "4 draws a row" in trainer.plan.describe()
    objective, calls = trainer.objective, []
    real = objective.row_terms

    def spy(globals, rows, s, fixed_locals=False):
        calls.append(trainer.view.rows_in(rows))
        return real(globals, rows, s, fixed_locals)
    objective.row_terms = spy
    rows = trainer.view.rows(torch.arange(10))
    globals = trainer.global_guide.rsample(3)[0]
    torch.manual_seed(0)
    weighted = objective.weighted_row_terms(globals, rows, 3)
    assert calls == [40] and weighted.shape == (3, 10)
    torch.manual_seed(0)
    single = real(globals, trainer.view.repeat_rows(rows, 4), 3).reshape(3, 10, 4)
    torch.testing.assert_close(weighted, torch.logsumexp(single, -1) - torch.log(torch.tensor(4.0)))
    with pytest.raises(ValueError, match="local_samples"):
        _hier(local_samples=0)
    with pytest.raises(ValueError, match="gaussian local guide"):
        _hier(local_samples=2, guide={"z": "implicit"})


def test_with_several_local_draws_the_guide_learns_from_its_own_elbo():
    """q(β) learns from the importance-weighted bound, the local guide only from its
    per-row ELBO (PIWAE): without that ELBO the guide gets no gradient at all."""
    trainer = _hier(local_samples=4)
    objective = trainer.objective
    rows = trainer.view.rows(torch.arange(10))

    def guide_grads():
        objective.step(trainer.global_guide.rsample(3), rows, 1.0)
        return [p.grad for p in trainer.local_guide.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in guide_grads())
    assert any(p.grad is not None for p in trainer.global_guide.parameters())
    objective.local_fit = lambda u, rows, s: torch.zeros(())
    assert all(g is None for g in guide_grads())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.global_guide.parameters())


def test_local_samples_default_to_the_plans_rule():
    """Several draws a row where the locals' density is known, one where it is not
    (an implicit guide), and one when the user asks for the plain ELBO."""
    assert _hier().plan.local_samples == LOCAL_SAMPLES > 1
    assert f"{LOCAL_SAMPLES} draws a row" in _hier().plan.describe()
    assert _hier(guide={"z": "implicit"}).plan.local_samples == 1
    assert _hier(local_samples=1).plan.local_samples == 1
    assert FitSettings.from_dict(FitSettings().to_dict()).local_samples is None


def test_global_gradient_defaults_to_fishers_identity_with_several_draws():
    """Several draws a row: q(β) learns with the locals held at their weighted draws;
    one draw, or an implicit guide: through the guide's draws; a choice made wins."""
    assert _hier().plan.global_gradient == "fisher"
    assert "q(β) gradient    fisher, the locals held at their weighted draws" in _hier().plan.describe()
    assert _hier(local_samples=1).plan.global_gradient == "elbo"
    assert _hier(guide={"z": "implicit"}).plan.global_gradient == "elbo"
    assert _hier(global_gradient="elbo").plan.global_gradient == "elbo"
    assert _hier(local_samples=1, global_gradient="fisher").plan.global_gradient == "fisher"
    assert FitSettings.from_dict(FitSettings().to_dict()).global_gradient is None
    with pytest.raises(ValueError, match="global_gradient"):
        _hier(global_gradient="path")


def test_fishers_identity_holds_the_locals_at_their_weighted_draws():
    """With `fisher` a row's gradient in β is Σ_l w_l ∇_β log p(z_l | β) = Σ_l w_l (z_l − β)
    for hier_gauss (its ratio reads z alone), w the bound's self-normalised weights:
    the locals do not move with β, although the guide draws them at β."""
    trainer = _hier(local_samples=4, global_gradient="fisher")
    objective, drawn, terms = trainer.objective, [], []
    draw_locals, row_terms = trainer.local_guide.rsample, objective.row_terms

    def keep_draws(*args):
        z, log_qz = draw_locals(*args)
        drawn.append(z.detach())
        return z, log_qz

    def keep_terms(*args, **kwargs):
        terms.append(row_terms(*args, **kwargs))
        return terms[-1]
    trainer.local_guide.rsample, objective.row_terms = keep_draws, keep_terms
    rows = trainer.view.rows(torch.arange(10))
    beta = trainer.global_guide.rsample(3)[0]["beta"].detach().requires_grad_(True)
    bound = objective.weighted_row_terms({"beta": beta}, rows, 3, fixed_locals=True)
    (gradient,) = torch.autograd.grad(bound.sum(), beta)
    weights = torch.softmax(terms[0].detach().reshape(3, 10, 4), -1)
    z = drawn[0].reshape(3, 10, 4, 2)
    expected = (weights[..., None] * (z - beta.detach()[:, None, None, :])).sum((1, 2))
    torch.testing.assert_close(gradient, expected)


POSITIVE = """
model positive
data y : real
latent mu ~ Normal(0, 1)
plate n over y {
    noise e ~ Normal(0, 1)
    observe y = exp(mu + 0.5 * e)
}
"""


def test_log_features_read_a_positive_observation_on_the_log():
    """`log_features` makes the networks read the array's log (the plan records the
    encoding); an array that is not observed, or data that are not positive, are
    refused naming it before any training."""
    from tests.infer.models import compiled

    y = torch.exp(0.3 + 0.5 * torch.randn(50, generator=torch.Generator().manual_seed(0)))
    model = compiled("positive.him", POSITIVE)
    trainer = Trainer(model, {"y": y}, FitSettings(steps=2, log_features=("y",)))
    rows = trainer.view.rows(torch.arange(50))
    assert torch.allclose(trainer.view.x_features(rows).reshape(-1), y.log())
    assert dict(trainer.plan.encodings)["y"] == "log"
    assert dict(Trainer(model, {"y": y}, FitSettings(steps=2)).plan.encodings)["y"] == "identity"
    with pytest.raises(ValueError, match="`z` is not an observed real array"):
        Trainer(model, {"y": y}, FitSettings(steps=2, log_features=("z",)))
    with pytest.raises(ValueError, match="not positive in row 7"):
        Trainer(model, {"y": torch.where(torch.arange(50) == 7, -1.0, y)}, FitSettings(steps=2, log_features=("y",)))


POSITIVE_LOCAL = """
model positive_local
data y : real
latent mu ~ Normal(0, 1)
plate n over y {
    latent z ~ Normal(mu, 0.5)
    noise e ~ Normal(0, 1)
    observe y = exp(z + 0.2 * e)
}
"""


def test_local_summaries_read_the_features_the_fit_trained_on():
    """The local guide reads the rows as the fit did: a fit's locals (locals.npz)
    are computed from the log where `log_features` asked for it, not from the values."""
    import copy
    import dataclasses

    from tests.infer.models import compiled

    y = torch.exp(0.3 + 0.5 * torch.randn(30, generator=torch.Generator().manual_seed(0)))
    trainer = Trainer(compiled("positive_local.him", POSITIVE_LOCAL), {"y": y},
                      FitSettings(steps=4, log_features=("y",)))
    result = trainer.result()
    torch.manual_seed(0)
    on_log = result.locals({"y": y})["z_mean"]
    torch.manual_seed(0)
    as_values = copy.copy(result)
    as_values.settings = dataclasses.replace(result.settings, log_features=())
    assert not torch.allclose(torch.as_tensor(on_log), torch.as_tensor(as_values.locals({"y": y})["z_mean"]))


def test_log_features_survive_a_round_trip_through_json():
    """fit.json writes the setting as a list; read back it equals the tuple a fit
    was given, so a resumed or replayed fit is not refused as changed."""
    import json

    given = FitSettings(log_features=["y"])
    back = FitSettings.from_dict(json.loads(json.dumps(given.to_dict())))
    assert given.log_features == back.log_features == ("y",) and back.to_dict() == given.to_dict()
