"""pantherseg.engine.networks: what the ensemble runs, who builds it, and what releasing it means."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pantherseg.engine.networks import GivenNetworks, TorchNetwork

from fakes import EchoNetwork


def member(name: str):
    return SimpleNamespace(name=name)


def test_given_networks_wrap_torch_modules_and_take_networks_as_they_are():
    echo = EchoNetwork()

    class Served:
        def __call__(self, tiles):
            return tiles

        def release(self):
            pass

        def set_threads(self, threads):
            pass

    served = Served()
    given = GivenNetworks({"a": echo, "b": served})
    built = given.build(member("a"))
    assert isinstance(built, TorchNetwork) and built.module is echo
    assert given.build(member("b")) is served
    with pytest.raises(KeyError, match="no network was given for member 'c'"):
        given.build(member("c"))
    made = GivenNetworks(lambda m: EchoNetwork(shift=len(m.name)))
    assert isinstance(made.build(member("abc")), TorchNetwork)


def test_a_released_torch_network_refuses_to_run_instead_of_using_freed_weights():
    network = TorchNetwork(EchoNetwork(shift=1.0))
    tiles = torch.zeros((1, 1, 2, 2, 2))
    assert float(network(tiles)[0, 1].mean()) == 1.0
    network.release()
    with pytest.raises(RuntimeError, match="was released"):
        network(tiles)


def test_the_ensemble_builds_each_network_once_sets_its_threads_and_releases_it(tiny_weights, tiny_config):
    from pantherseg.config import load_config
    from pantherseg.engine.ensemble import Ensemble
    from pantherseg.engine.runtime import EngineOptions

    calls = []

    class Recording(TorchNetwork):
        def set_threads(self, threads):
            calls.append(("threads", threads))

        def release(self):
            calls.append(("release",))
            super().release()

    def build(m):
        calls.append(("build", m.name))
        return Recording(EchoNetwork())

    ensemble = Ensemble.load(
        config=load_config(tiny_config),
        task="t2",
        weights=tiny_weights,
        engine=EngineOptions(device="cpu", cpu_threads=3),
        backend=GivenNetworks(build),
    )
    [only] = ensemble.members
    assert ensemble.network(only) is ensemble.network(only)
    assert calls == [("build", only.name), ("threads", 3)]
    ensemble.release_network(only)
    assert calls[-1] == ("release",) and ensemble.networks == {}
    ensemble.network(only)
    assert calls.count(("build", only.name)) == 2  # the backend builds it again when it next runs
