"""The committed SLTNet-family zoo models (sims/zoo/sltnet_events.py): they load, match their cards,
train deterministically, and the spiking ones spike."""
from __future__ import annotations

import pytest
import torch

from methods.sltnet import LIF, param_count
from sims.zoo import sltnet_events as zoo
from sims.zoo.registry import ZOO, load_zoo_model, read_card

torch.set_num_threads(1)


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_committed_weights_load_and_match_the_card(name):
    model, card = load_zoo_model(name), read_card(name)
    assert name in ZOO and param_count(model) == card["param_count"]
    assert card["val_miou"] > card["majority_miou"]  # learned more than the majority-class map
    spiking = any(isinstance(m, LIF) for m in model.modules())
    assert spiking == (zoo.MODELS[name] != "sltnet-ann")
    if spiking:
        assert 0.01 < card["mean_firing_rate"] < 0.9


@pytest.mark.slow
@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_cards_reproduce_from_the_weights(name):
    got = ZOO.get(name).evaluate(load_zoo_model(name))
    assert got["val_miou"] == pytest.approx(read_card(name)["val_miou"], abs=1e-6)


def test_training_is_deterministic_for_a_seed():
    data = zoo.event_dataset((0,), 2)
    a, la = zoo.fit("snn-baseline", 0, 2, data, arch={"base": 8})
    b, lb = zoo.fit("snn-baseline", 0, 2, data, arch={"base": 8})
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert la == lb and all(torch.equal(p, q) for p, q in pairs)
