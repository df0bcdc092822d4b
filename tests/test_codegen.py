"""The code generator: golden snapshots of every example's module, and the
generated modules' behaviour (metadata, shapes, names, devices)."""
from __future__ import annotations

import glob
import os

import pytest
import torch

import himdsl

EXAMPLES = sorted(glob.glob("examples/*/model.him"))
GOLDEN = "tests/golden/codegen"


def _normalised(source: str) -> str:
    """Generated code with the machine-dependent absolute folder replaced."""
    lines = [("    source_dir = '<folder>'" if line.startswith("    source_dir = ") else line)
             for line in source.splitlines()]
    return "\n".join(lines) + "\n"


def _compare_with_golden(source: str, golden: str, update: bool) -> None:
    """Only `--update-golden` writes a golden file; a missing one fails."""
    if update:
        with open(golden, "w") as handle:
            handle.write(source)
    assert os.path.exists(golden), f"no golden file {golden}: write it with --update-golden and inspect it"
    with open(golden) as handle:
        assert source == handle.read(), "generated code changed; inspect and rerun with --update-golden"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.split("/")[1])
def test_generated_code_matches_golden(path, update_golden):
    source = _normalised(himdsl.load(path).python())
    _compare_with_golden(source, os.path.join(GOLDEN, path.split("/")[1] + ".py"), update_golden)


def test_a_missing_golden_fails_and_is_not_written(tmp_path):
    golden = tmp_path / "new.py"
    with pytest.raises(AssertionError, match="no golden file"):
        _compare_with_golden("x = 1\n", str(golden), update=False)
    assert not golden.exists()
    _compare_with_golden("x = 1\n", str(golden), update=True)
    assert golden.read_text() == "x = 1\n"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.split("/")[1])
def test_generated_module_simulates_every_node(path):
    module = himdsl.load(path).module()
    globals_ = module.sample_globals(3)
    covariates = {name: torch.randn(5, *module.nodes[name].shape) for name in module.covariate_names}
    out = module.simulate(globals_, covariates, rows=5 if module.plate else None, draws=3)
    for name in module.observed_names + module.local_names:
        rows = (5,) if module.plate else ()
        assert tuple(out[name].shape) == (3,) + rows + module.nodes[name].shape


def test_stable_weight_names_and_layout():
    module = himdsl.load("examples/deep_implicit/model.him").module()
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
    assert shapes == {
        "z2.weight": (100, 128), "z2.bias": (128,), "h2.weight": (128, 128), "h2.bias": (128,),
        "z1.weight": (228, 128), "z1.bias": (128,), "h1.weight": (128, 128), "h1.bias": (128,),
        "x.weight": (228, 10), "x.bias": (10,),
    }


def test_numbered_layers_and_mlp(tmp_path):
    path = tmp_path / "m.him"
    path.write_text("data x : real[3]\nplate n over x {\n  noise e ~ Normal(0, 1) [2]\n"
                    "  let h = dense(mlp(e, [8, 4], 5, tanh), 6)\n  observe x = dense(h, 3)\n}\n")
    module = himdsl.load(str(path)).module()
    names = [name for name, _ in module.named_parameters()]
    assert names[:8] == ["h.0.weight", "h.0.bias", "h.1.weight", "h.1.bias", "h.2.weight", "h.2.bias",
                         "h.3.weight", "h.3.bias"]
    assert tuple(module.get_parameter("h.3.weight").shape) == (5, 6)
    out = module.simulate(rows=4, draws=2)
    assert tuple(out["x"].shape) == (2, 4, 3)


def test_metadata_of_bayes_gan():
    module = himdsl.load("examples/bayes_gan/model.him").module()
    assert module.observed_names == ("y",) and module.covariate_names == ("x",)
    assert module.nodes["y"].dtype == "cat" and module.nodes["y"].categories == 2
    assert "h.weight" in module.global_names and module.nodes["h.weight"].shape == (9, 32)
    assert not module.explicit


def test_explicit_model_densities_match_torch(tmp_path):
    path = tmp_path / "m.him"
    path.write_text("data x : real[2]\nlatent mu ~ Normal(0, 1) [2]\nplate n over x {\n"
                    "  latent z ~ Normal(mu, 2) [2]\n  observe x ~ Normal(z, 0.5)\n}\n")
    module = himdsl.load(str(path)).module()
    assert module.explicit
    g = {"mu": torch.randn(4, 2)}
    z, x = torch.randn(4, 6, 2), torch.randn(6, 2)
    expected_z = torch.distributions.Normal(g["mu"][:, None], 2.0).log_prob(z).sum(-1)
    expected_x = torch.distributions.Normal(z, 0.5).log_prob(x).sum(-1)
    torch.testing.assert_close(module.log_local_prior(g, {"z": z}), expected_z)
    torch.testing.assert_close(module.log_likelihood(g, {"z": z}, {"x": x}), expected_x)
    torch.testing.assert_close(module.log_prior(g), torch.distributions.Normal(0.0, 1.0).log_prob(g["mu"]).sum(-1))


def test_hierarchical_prior_draws_children_given_parents(tmp_path):
    path = tmp_path / "m.him"
    path.write_text("data x : real\nlatent s ~ HalfNormal(1)\nlatent m ~ Normal(0, s) [3]\n"
                    "noise e ~ Normal(0, 1)\nobserve x = sum(m) + e\n")
    module = himdsl.load(str(path)).module()
    g = module.sample_globals(2000, given={"s": torch.tensor(0.01)})
    assert g["m"].abs().max() < 0.1
    assert torch.isfinite(module.log_prior(g)).all()


def test_scalar_lifting_in_mixed_rank_expressions(tmp_path):
    path = tmp_path / "m.him"
    path.write_text("data x : real[3]\nconst v = [1.0, 2.0, 3.0]\nplate n over x {\n"
                    "  noise s ~ Normal(0, 1)\n  observe x = s * v + stack(s, s, s)\n}\n")
    module = himdsl.load(str(path)).module()
    out = module.simulate(rows=5, draws=2)
    s = out["s"]
    torch.testing.assert_close(out["x"], s[..., None] * torch.tensor([1.0, 2.0, 3.0]) + s[..., None])


def test_extern_is_loaded_relative_to_model_and_errors_name_it(tmp_path):
    (tmp_path / "sim.py").write_text("import torch\n"
                                     "def sim(t):\n    return t.sum(-1, keepdim=True).expand(*t.shape[:-1], 3)\n"
                                     "def bad(t):\n    return torch.zeros(2)\n"
                                     "def boom(t):\n    raise RuntimeError('exploded')\n")
    for func, message in (("bad", "returned shape"), ("boom", "raised RuntimeError: exploded")):
        path = tmp_path / f"{func}.him"
        path.write_text(f'extern {func}(t : real[2]) -> real[3] from "sim.py"\ndata x : real[3]\n'
                        f"latent t ~ Normal(0, 1) [2]\nobserve x = {func}(t)\n")
        module = himdsl.load(str(path)).module()
        with pytest.raises(himdsl.ExternError, match=rf"extern `{func}` \(line 1\) {message}"):
            module.simulate(module.sample_globals(2))
    path = tmp_path / "ok.him"
    path.write_text('extern sim(t : real[2]) -> real[3] from "sim.py"\ndata x : real[3]\n'
                    "latent t ~ Normal(0, 1) [2]\nobserve x = sim(t)\n")
    module = himdsl.load(str(path)).module()
    g = module.sample_globals(4)
    torch.testing.assert_close(module.simulate(g)["x"], g["t"].sum(-1, keepdim=True).expand(4, 3))


def test_missing_extern_function_is_reported(tmp_path):
    (tmp_path / "sim.py").write_text("def other(t):\n    return t\n")
    path = tmp_path / "m.him"
    path.write_text('extern sim(t : real[2]) -> real[2] from "sim.py"\ndata x : real[2]\n'
                    "latent t ~ Normal(0, 1) [2]\nobserve x = sim(t)\n")
    with pytest.raises(himdsl.ExternError, match=r"extern `sim` \(line 1\): `sim.py` defines no function `sim`"):
        himdsl.load(str(path)).module()


def test_model_strings_are_never_code(tmp_path):
    (tmp_path / "a'b.py").write_text("def f(t):\n    return t\n")
    path = tmp_path / "m.him"
    path.write_text('extern f(t : real[2]) -> real[2] from "a\'b.py"\ndata x : real[2]\n'
                    "latent t ~ Normal(0, 1) [2]\nobserve x = f(t)\n")
    model = himdsl.load(str(path))
    assert "\"a'b.py\"" in model.python()
    model.module().simulate(model.module().sample_globals(1))


def test_module_runs_in_double_precision():
    module = himdsl.load("examples/hier_gauss/model.him").module().double()
    out = module.simulate(module.sample_globals(2), rows=3)
    assert out["x"].dtype == torch.float64


def test_compile_cli_writes_a_standalone_module(tmp_path):
    import importlib.util

    from typer.testing import CliRunner

    from himdsl.cli import app

    target = tmp_path / "hier.py"
    result = CliRunner().invoke(app, ["compile", "examples/hier_gauss/model.him", "-o", str(target)])
    assert result.exit_code == 0, result.output
    spec = importlib.util.spec_from_file_location("hier", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    instance = module.HierGauss()
    assert tuple(instance.simulate(instance.sample_globals(2), rows=3)["x"].shape) == (2, 3, 2)
    header = target.read_text().splitlines()[:4]
    assert "examples/hier_gauss/model.him" in header[2] and "himdsl 0.1.0" in header[2]


def test_compile_cli_emits_each_stage():
    from typer.testing import CliRunner

    from himdsl.cli import app

    runner = CliRunner()
    ast_text = runner.invoke(app, ["compile", "examples/hier_gauss/model.him", "--emit", "ast"]).output
    assert "Node(keyword='latent', name='beta'" in ast_text
    graph_text = runner.invoke(app, ["compile", "examples/hier_gauss/model.him", "--emit", "graph"]).output
    assert '"name": "beta"' in graph_text
    bad = runner.invoke(app, ["compile", "examples/hier_gauss/model.him", "--emit", "bytecode"])
    assert bad.exit_code == 2 and "--emit must be ast, graph or python" in bad.output


def test_cat_encoding_is_declared():
    module = himdsl.load("examples/bayes_gan/model.him").module()
    assert module.encodings == {"y": "one-hot(2)"}


def test_predict_returns_the_observations_parents_with_noise_at_its_mean():
    module = himdsl.load("examples/bayes_gan/model.him").module()
    assert module.prediction_names == ("logits",)
    torch.manual_seed(0)
    globals_ = {n: v.requires_grad_() for n, v in module.sample_globals(3).items()}
    x = torch.randn(7, 5)
    logits = module.predict(globals_, {"x": x}, rows=7)["logits"]
    inputs = torch.cat([x, torch.zeros(7, 4)], -1)                 # eps at its mean, 0
    h = torch.relu(inputs @ globals_["h.weight"] + globals_["h.bias"][:, None, :])
    expected = h @ globals_["logits.weight"] + globals_["logits.bias"][:, None, :]
    torch.testing.assert_close(logits, expected)
    logits.sum().backward()                                       # differentiable in β
    assert globals_["h.weight"].grad.abs().sum() > 0
    noisy = module.simulate(globals_, {"x": x}, rows=7)["logits"]
    assert not torch.allclose(noisy, expected)                     # simulate still draws eps


@pytest.mark.parametrize("path, names", [("examples/deep_implicit/model.him", ("h1",)),
                                         ("examples/hier_gauss/model.him", ()),
                                         ("examples/lotka_volterra/many_series.him", ())])
def test_prediction_names_are_deterministic_parents_and_none_with_externs(path, names):
    assert himdsl.load(path).module_class().prediction_names == names


def test_local_activations_name_the_function_that_bounds_a_latents_support():
    assert himdsl.load("examples/deep_implicit/model.him").module_class().local_activations == \
        {"z2": "relu", "z1": "relu"}
    assert himdsl.load("examples/hier_gauss/model.him").module_class().local_activations == {}
