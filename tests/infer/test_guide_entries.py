"""`guide` entries from Python, the command line or a .him block: each is honoured
or rejected with a message naming the entry, before any training."""
import pytest

from himdsl.driver import run_frontend
from himdsl.infer import FitSettings, LocalGuideSpec, Trainer
from himdsl.infer.guide_entries import resolve_guide
from tests.infer.models import compiled, hier_gauss, hier_gauss_data

TINY = dict(steps=4, batch=16, particles=4, simulations=32, log_every=2)
TWO_LOCALS = """
data x : real[2]
latent beta ~ Normal(0, 1) [2]
plate n over x {
    latent z ~ Normal(beta, 1) [2]
    latent w ~ Normal(0, 1) [2]
    noise eps ~ Normal(0, 1) [2]
    observe x = z + w + 0.5 * eps
}
"""


def _trainer(module=None, **settings):
    return Trainer(module or hier_gauss(), hier_gauss_data(n=40)[0], FitSettings(**{**TINY, **settings}))


def test_the_languages_local_family_names_work_from_python():
    trainer = _trainer(guide={"z": "normal"})
    assert trainer.plan.local_guide == "gaussian"
    trainer.run()


@pytest.mark.parametrize("guide, message", [
    ({"zz": "normal"}, "guide entry `zz`: the model has no latent of that name (latents: beta, z)"),
    ({"beta": "implicit"}, "`beta` is a global latent; its family must be one of"),
    ({"z": "flow"}, "`z` is a local latent; its family must be normal"),
    ({"z": LocalGuideSpec("point")}, "`z` is a local latent"),
])
def test_an_entry_the_model_cannot_take_is_named(guide, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _trainer(guide=guide)


def test_locals_of_a_row_share_one_guide_so_their_entries_must_agree():
    module = compiled("two_locals", TWO_LOCALS)
    assert set(resolve_guide(module, {"z": "implicit", "w": "implicit"})) == {"z", "w"}
    with pytest.raises(ValueError, match="guide entries `z` and `w` differ"):
        resolve_guide(module, {"z": "normal", "w": "implicit"})


def test_a_guide_block_with_disagreeing_locals_is_a_located_error():
    result = run_frontend(TWO_LOCALS + "guide { z ~ normal; w ~ implicit }\n", path="two.him")
    (diag,) = [d for d in result.diagnostics if d.code == "E0154"]
    assert diag.span.line == 10 and "share one amortised guide" in diag.message


def test_an_implicit_local_guide_is_trained_against_the_empirical_ratio():
    trainer = _trainer(guide={"z": "implicit"})
    assert (trainer.plan.local_guide, trainer.plan.ratio) == ("implicit", "empirical")
    trainer.run()
    with pytest.raises(ValueError, match="an implicit local guide"):
        _trainer(guide={"z": "implicit"}, ratio={"mode": "contrastive"})
