"""The packaged quickstart recipes: each loads and validates, and each says what it is for."""

from __future__ import annotations

import pytest

from motionprop.errors import InputError
from motionprop.train.quickstart import RECIPES, quickstart_config


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_loads_validates_and_has_a_time_limit(recipe):
    cfg = quickstart_config(recipe)
    cfg.model.validate()
    assert cfg.name == recipe
    assert cfg.data.train_source == [] and cfg.data.val_source == []  # filled in by the quickstart
    assert RECIPES[recipe][1] > 0


def test_the_pretrain_recipe_is_the_papers_objective_and_the_others_are_not():
    paper = quickstart_config("pretrain").model
    assert (paper.guidance_input, paper.prediction, paper.flow_loss, paper.guidance_radius) == \
        ("sparse", "flow", "discrete", 0.0)
    for recipe in ("quickstart", "long"):
        assert quickstart_config(recipe).model.prediction == "residual"


def test_an_unknown_recipe_is_a_clear_error():
    with pytest.raises(InputError, match="unknown recipe 'fast'.*quickstart"):
        quickstart_config("fast")
