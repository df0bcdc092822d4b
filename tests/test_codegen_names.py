"""Every model name gets its own Python name in the generated module: names that
would mangle to the same identifier (`h.weight` and `h_weight`, `out` and `out_`)
or that meet the generated code's own names (`out`, `H`, `prior_a`, `beta_row`)
still denote different values."""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import himdsl


def _load(tmp_path, source: str, name: str = "m.him"):
    path = tmp_path / name
    path.write_text(source)
    return himdsl.load(str(path)).module()


def test_latent_named_like_a_layer_weight_keeps_its_own_values(tmp_path):
    module = _load(tmp_path, "data x : real[3]\ndata y : real\nlatent h_weight ~ Normal(5, 1)\n"
                             "plate n over y {\n  let h = dense(x, 4, relu, prior = Normal(0, 1))\n"
                             "  noise e ~ Normal(0, 1)\n  observe y = sum(h) + h_weight + 0.1 * e\n}\n")
    g = module.sample_globals(4000)
    assert g["h_weight"].shape == (4000,) and g["h.weight"].shape == (4000, 3, 4)
    assert abs(g["h_weight"].mean() - 5) < 0.1 and abs(g["h_weight"].std() - 1) < 0.1
    assert abs(g["h.weight"].mean()) < 0.05
    x = torch.randn(7, 3)
    out = module.simulate(g, {"x": x})
    h = torch.relu(x @ g["h.weight"] + g["h.bias"][:, None, :])
    torch.testing.assert_close(out["h"], h)
    torch.testing.assert_close(out["y"], h.sum(-1) + g["h_weight"][:, None] + 0.1 * out["e"])


def test_out_and_out_underscore_are_two_latents(tmp_path):
    module = _load(tmp_path, "data y : real\nlatent out ~ Normal(5, 1)\nlatent out_ ~ Normal(-5, 1)\n"
                             "noise e ~ Normal(0, 1)\nobserve y = out - 2 * out_ + 0.1 * e\n")
    g = module.sample_globals(4000)
    assert abs(g["out"].mean() - 5) < 0.1 and abs(g["out_"].mean() + 5) < 0.1
    out = module.simulate(g)
    torch.testing.assert_close(out["y"], g["out"] - 2 * g["out_"] + 0.1 * out["e"])


def test_param_named_like_a_prior_method_is_the_parameter(tmp_path):
    module = _load(tmp_path, "data y : real\nlatent a ~ Normal(5, 1)\nparam prior_a : real\n"
                             "noise e ~ Normal(0, 1)\nobserve y = a + prior_a + e\n")
    with torch.no_grad():
        module.get_parameter("prior_a").fill_(3.0)
    g = module.sample_globals(4000)
    assert abs(g["a"].mean() - 5) < 0.1
    out = module.simulate(g)
    torch.testing.assert_close(out["y"], g["a"] + 3.0 + out["e"])


def test_let_named_like_a_lifted_global_is_its_own_value(tmp_path):
    module = _load(tmp_path, "data y : real\nlatent beta ~ Normal(5, 1)\nplate n over y {\n"
                             "  let beta_row = 2 * beta\n  noise e ~ Normal(0, 1)\n"
                             "  observe y = beta_row + beta + e\n}\n")
    g = module.sample_globals(3)
    out = module.simulate(g, rows=4)
    torch.testing.assert_close(out["beta_row"], 2 * g["beta"][:, None])   # [3, 1]: broadcasts over rows
    torch.testing.assert_close(out["y"], 3 * g["beta"][:, None] + out["e"])


def test_model_and_constants_named_like_the_generated_codes_own_names(tmp_path):
    module = _load(tmp_path, "model h\nconst H = 2\nconst torch = 3\ndata y : real[2]\n"
                             "latent math ~ Normal(5, 1) [2]\nplate n over y {\n  noise e ~ Normal(0, 1)\n"
                             "  observe y = H * math + torch * e\n}\n")
    g = module.sample_globals(3)
    out = module.simulate(g, rows=4)
    torch.testing.assert_close(out["y"], 2 * g["math"][:, None] + 3 * out["e"][..., None])


# names that meet each other or the generated code's own names once mangled
_POOL = ["h_weight", "h_bias", "out", "out_", "top", "batch", "g", "self", "H", "torch", "math",
         "prior_h_weight", "h_weight_row", "h_weight_2", "rows", "fixed", "draws", "covariates",
         "log_probs", "NodeInfo", "HimModule", "SOURCE_SHA256", "lambda", "lambda_", "e_row",
         "None", "None_", "getattr", "int", "prior_out", "prior_out_", "x_row", "nodes_"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.sampled_from(_POOL), min_size=2, max_size=10, unique=True))
def test_clashing_names_keep_their_values(names, tmp_path):
    """Globals with distinct priors, each copied by a `let` in the plate: every let
    holds its own global's value, and the Bayesian layer `h` its own weights."""
    globals_, lets = names[: (len(names) + 1) // 2], names[(len(names) + 1) // 2:]
    lines = ["data x : real[2]", "data y : real"]
    lines += [f"latent {n} ~ Normal({10 * (i + 1)}, 0.01)" for i, n in enumerate(globals_)]
    lines += ["plate n over y {", "  let h = dense(x, 3, prior = Normal(0, 1))", "  noise e ~ Normal(0, 1)"]
    lines += [f"  let {n} = {globals_[i % len(globals_)]} * 1" for i, n in enumerate(lets)]
    terms = " + ".join(lets or globals_)
    lines += [f"  observe y = sum(h) + {terms} + e", "}"]
    module = _load(tmp_path, "\n".join(lines) + "\n")
    g = module.sample_globals(5)
    for i, name in enumerate(globals_):
        assert g[name].shape == (5,) and (g[name] - 10 * (i + 1)).abs().max() < 0.1, name
    x = torch.randn(4, 2)
    out = module.simulate(g, {"x": x})
    torch.testing.assert_close(out["h"], x @ g["h.weight"] + g["h.bias"][:, None, :])
    for i, name in enumerate(lets):
        torch.testing.assert_close(out[name].expand(5, 4), g[globals_[i % len(globals_)]][:, None].expand(5, 4))
