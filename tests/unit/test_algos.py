"""The algorithm registry: capabilities the core asks instead of names, and the flow registry launch.py uses."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from hpcmarl import flows
from hpcmarl.algos import aggregation, base
from hpcmarl.algos.base import Algorithm, register, register_flow
from hpcmarl.config import ConfigError, load_config

PPO = dict(config="hpcmarl.algos.ppo:PPOConfig", learner="hpcmarl.algos.ppo:PPOLearner")
C4 = ["env.name=connect_four_v3", "league.enabled=true"]


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Each test registers into copies of the registries holding the built-ins only: nothing it adds outlives it,
    and plug-ins other test modules registered in this process (tests/e2e) do not change its messages."""
    builtin = ("mappo", "ippo", "qmix", "vdn", "matrace", "nigt")
    monkeypatch.setattr(base, "ALGORITHMS", {k: v for k, v in base.ALGORITHMS.items() if k in builtin})
    monkeypatch.setattr(flows, "FLOWS", dict(flows.FLOWS))
    monkeypatch.setattr(aggregation, "RULES", dict(aggregation.RULES))


def error_of(overrides) -> str:
    with pytest.raises(ConfigError) as ei:
        load_config(None, list(overrides))
    return str(ei.value)


def test_builtin_capabilities_keep_todays_behaviour():
    fields = ("flow", "discrete", "continuous", "on_policy", "league", "overlap", "recurrent_overlap",
              "centralized_critic", "needs_episode_limit")
    want = {"mappo": ("rollouts", True, True, True, True, True, False, True, False),
            "ippo": ("rollouts", True, True, True, True, True, False, False, False),
            "qmix": ("rollouts", True, False, False, False, True, True, False, True),
            "vdn": ("rollouts", True, False, False, False, True, True, False, True),
            "matrace": ("rollouts_async", True, True, True, False, False, False, True, False),
            "nigt": ("gradients", True, True, True, False, False, False, False, False)}
    got = {n: tuple(getattr(base.get(n), f) for f in fields) for n in want}
    assert got == want
    assert base.DEFAULT == "mappo" and load_config(None).algo.name == base.DEFAULT
    assert {n: f.roles for n, f in flows.FLOWS.items()} == {
        "rollouts": "hpcmarl.roles.rollouts", "rollouts_async": "hpcmarl.roles.async_rollouts",
        "gradients": "hpcmarl.roles.gradients"}
    caps = ("unrolls", "owns_update", "overlap", "league", "sizing")
    assert {n: tuple(getattr(f, c) for c in caps) for n, f in flows.FLOWS.items()} == {
        "rollouts": (True, False, True, True, "sync"), "rollouts_async": (True, False, False, False, "async"),
        "gradients": (False, True, False, False, "gradients")}


def test_register_checks_flows_and_capabilities():
    with pytest.raises(ValueError, match="flow must be one of rollouts, rollouts_async, gradients, not 'mine'"):
        register(Algorithm("x", flow="mine", **PPO))
    register_flow("mine", "mypkg.roles_mine")  # a plug-in's flow: its role module by dotted path
    assert register(Algorithm("x", flow="mine", **PPO)).flow == "mine" and flows.get("mine").roles == "mypkg.roles_mine"
    register_flow("mine", "mypkg.roles_mine")  # the same definition again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_flow("mine", "mypkg.other")
    with pytest.raises(ValueError, match="not a dotted module path"):
        register_flow("bad", "mypkg/roles.py")
    with pytest.raises(ValueError, match="league mode does not run on the rollouts_async flow"):
        register(Algorithm("y", flow="rollouts_async", league=True, **PPO))
    with pytest.raises(ValueError, match="discrete or continuous"):
        register(Algorithm("z", discrete=False, continuous=False, **PPO))


def test_league_mode_asks_the_entry():
    assert load_config(None, C4 + ["algo.name=ippo"]).algo.name == "ippo"
    msg = error_of(C4 + ["algo.name=matrace"])
    assert msg.startswith("config key 'algo.name': league mode trains ippo or mappo, not matrace"), msg
    register(Algorithm("ppo_plain", **PPO))  # league=False by default
    msg = error_of(C4 + ["algo.name=ppo_plain"])
    assert "'algo.name'" in msg and "not ppo_plain" in msg and "league=True" in msg, msg
    register(Algorithm("ppo_league", league=True, **PPO))
    assert load_config(None, C4 + ["algo.name=ppo_league"]).league.enabled
    assert "trains ippo, mappo or ppo_league, not matrace" in error_of(C4 + ["algo.name=matrace"])


def test_overlap_asks_the_entry():
    ov = ["actors.overlap=true"]
    assert "synchronous rollout flow" in error_of(ov + ["algo.name=matrace"])
    assert "recurrent ippo replays the GRU" in error_of(ov + ["algo.name=ippo", "algo.recurrent=true"])
    assert load_config(None, ov + ["algo.name=qmix", "algo.recurrent=true"]).actors.overlap  # recurrent_overlap
    register(Algorithm("ppo_fresh", overlap=False, **PPO))
    msg = error_of(ov + ["algo.name=ppo_fresh"])
    assert msg.startswith("config key 'actors.overlap': ppo_fresh does not train on unrolls of the previous"), msg
    register(Algorithm("ppo_rnn", recurrent_overlap=True, **PPO))
    assert load_config(None, ov + ["algo.name=ppo_rnn", "algo.recurrent=true"]).algo.recurrent


def test_the_core_asks_the_flow_object():
    """A plug-in's flow says what it supports; config validation, registration and the sizing model ask it."""
    from hpcmarl.sizing import measure

    register_flow("sync_copy", "mypkg.roles_sync", overlap=True, league=True)  # not modelled: no sizing
    register(Algorithm("ppo_sync_copy", flow="sync_copy", league=True, **PPO))
    cfg = load_config(None, ["algo.name=ppo_sync_copy", "actors.overlap=true"])
    assert cfg.actors.overlap  # the flow has overlap: no name test refuses it
    with pytest.raises(ValueError, match="^the sync_copy flow is not modelled"):
        measure(cfg)
    register_flow("grads_copy", "mypkg.roles_grads", unrolls=False, owns_update=True)
    register(Algorithm("nigt_copy", "hpcmarl.algos.nigt:NIGTConfig", None, flow="grads_copy"))  # no learner: fine
    assert load_config(None, ["algo.name=nigt_copy"]).algo.aggregation == "rennala"  # no unroll_length needed
    with pytest.raises(ValueError, match="the sync_copy flow needs a learner"):
        register(Algorithm("no_learner", "hpcmarl.algos.ppo:PPOConfig", None, flow="sync_copy"))
    msg = error_of(["algo.name=matrace", "actors.overlap=true"])
    assert "not available on matrace's rollouts_async flow" in msg, msg
    with pytest.raises(ValueError, match="unknown capabilities fast"):
        register_flow("odd", "mypkg.odd", fast=True)
    with pytest.raises(ValueError, match="sizing must be one of sync, async, gradients or None"):
        register_flow("odd", "mypkg.odd", sizing="round-robin")


def test_centralized_critic_comes_from_the_entry():
    from hpcmarl.algos.ppo import PPOConfig, PPOLearner
    from hpcmarl.envs import probe_spec

    spec = probe_spec("simple_spread_v3", None, None, with_state=True)
    register(Algorithm("ppo_central", centralized_critic=True, **PPO))
    for name, central in (("mappo", True), ("ippo", False), ("ppo_central", True)):
        cfg = PPOConfig(name=name, hidden=8, layers=1, critic_input="state")
        assert cfg.uses_state is central
        assert PPOLearner(spec, cfg, "cpu", seed=0).model.centralized is central, name


@dataclass
class LimitConfig:
    name: str = "limited"
    unroll_length: int = 5
    episode_limit: int = 0
    hidden: int = 8
    layers: int = 1


@pytest.mark.parametrize("needs", [True, False])
def test_episode_limit_is_derived_and_required_only_when_the_entry_says_so(needs):
    register(Algorithm("limited", LimitConfig, "hpcmarl.algos.ppo:PPOLearner", needs_episode_limit=needs))
    cfg = load_config(None, ["algo.name=limited"])
    assert cfg.algo.episode_limit == (25 if needs else 0)  # simple_spread's max_cycles
    assert ("algo.episode_limit" in cfg.derived) is needs
    if needs:
        assert "'algo.episode_limit'" in error_of(["algo.name=limited", "env.name=counting_v0"])
    else:
        assert load_config(None, ["algo.name=limited", "env.name=counting_v0"]).algo.episode_limit == 0


def test_preflight_refuses_action_kinds_the_entry_does_not_declare():
    from hpcmarl.preflight import PreflightError, probe_learner

    cfg = load_config(None, ["algo.name=qmix", "env.kwargs.continuous_actions=true"])
    with pytest.raises(PreflightError) as ei:
        probe_learner(cfg)
    assert str(ei.value) == ("config key 'algo.name': qmix needs discrete actions; group 'agent' of simple_spread_v3 "
                             "(continuous_actions=True) has continuous ones")
    assert probe_learner(load_config(None, ["algo.name=qmix"])) is not None  # discrete actions: a learner
    register(Algorithm("ppo_box", discrete=False, league=True, **PPO))
    with pytest.raises(PreflightError, match="ppo_box needs continuous actions; group 'agent' of simple_spread_v3 has"):
        probe_learner(load_config(None, ["algo.name=ppo_box"]))
    with pytest.raises(PreflightError, match="ppo_box needs continuous actions; group 'player' of connect_four_v3"):
        probe_learner(load_config(None, C4 + ["algo.name=ppo_box"]))  # league mode builds no learner, asks too
