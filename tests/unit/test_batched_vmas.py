"""The VMAS adapter (hpcmarl.envs.vmas): spec, arrays, episodes, seeds and exact resume, env errors, a Sampler."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("vmas")

from hpcmarl.envs.registry import EnvError  # noqa: E402
from hpcmarl.envs.vmas import VmasEnv, probe  # noqa: E402

NAV = {"n_agents": 2, "max_steps": 5}


def random_actions(env, rng):
    out = {}
    for g in env.spec.groups:
        if g.discrete:
            out[g.name] = rng.integers(0, g.n_actions, (env.num_envs, g.n))
        else:  # beyond the bounds on purpose: the adapter clips (VMAS would assert)
            out[g.name] = rng.uniform(-1.5, 1.5, (env.num_envs, g.n, g.act_dim)).astype(np.float32)
    return out


def run(env, steps, seed=0, between=None):
    """``steps`` steps with seeded random actions (calling ``between()`` after each):
    [(obs copy, reward, terminated, truncated, finished)]."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        r, te, tr, fin = env.step(random_actions(env, rng))
        out.append((env.obs["agent"].copy(), r["agent"], te["agent"], tr["agent"], fin))
        if between is not None:
            between()
    return out


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))


def test_spec_continuous_and_discrete():
    s = probe("navigation", {"n_agents": 3})
    assert s.name == "vmas:navigation" and s.state_dim == 0
    (g,) = s.groups
    assert (g.name, g.agents, g.obs_dim, g.discrete, g.act_dim) == ("agent", ["agent_0", "agent_1", "agent_2"], 18,
                                                                      False, 2)
    assert np.array_equal(g.act_low, [-1, -1]) and np.array_equal(g.act_high, [1, 1])
    d = probe("vmas:navigation", {"n_agents": 2, "continuous_actions": False}, with_state=True).groups[0]
    assert d.discrete and d.n_actions == 9 and d.n == 2  # 3 x 3 moves
    two = probe("navigation", {"n_agents": 3}, {"first": ["agent_0"], "rest": ["agent_*"]})
    assert [(g.name, g.agents) for g in two.groups] == [("first", ["agent_0"]), ("rest", ["agent_1", "agent_2"])]


def test_one_line_errors(monkeypatch):
    with pytest.raises(EnvError, match="unknown VMAS scenario 'navigatoin'"):
        probe("navigatoin")
    with pytest.raises(EnvError, match="n_agent"):  # VMAS only warns about unused scenario kwargs
        probe("navigation", {"n_agent": 3})
    with pytest.raises(EnvError, match="set by hpcmarl"):
        probe("navigation", {"device": "cuda"})
    monkeypatch.setitem(sys.modules, "vmas", None)
    with pytest.raises(EnvError, match=r'^vmas is not installed: pip install -e "\.\[vmas\]" \(or make setup '
                                       r'EXTRAS=vmas\)$'):
        probe("navigation")


@pytest.mark.parametrize("task, groups", [("wheel", [("agent", 4, 13)]),  # rewards [E, 1]
                                          ("simple_adversary", [("adversary", 1, 8), ("agent", 2, 10)])])
def test_other_scenarios(task, groups):
    env = VmasEnv(task, 3, 0, {"max_steps": 2})
    assert [(g.name, g.n, g.obs_dim) for g in env.spec.groups] == groups
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(2):
        r, te, tr, fin = env.step({g.name: rng.uniform(-2, 2, (3, g.n, g.act_dim)) for g in env.spec.groups})
    assert [r[g].shape for g, _, _ in groups] == [(3, n) for _, n, _ in groups] and tr["agent"].all()
    assert [(f.env, f.length, sorted(f.returns)) for f in fin] == [(i, 2, sorted(g for g, _, _ in groups))
                                                                   for i in range(3)]


@pytest.mark.parametrize("continuous", [True, False])
def test_step_shapes_and_dtypes(continuous):
    E = 6
    env = VmasEnv("navigation", E, 0, {**NAV, "continuous_actions": continuous})
    obs = env.reset()
    assert obs["agent"].shape == (E, 2, 18) and obs["agent"].dtype == np.float32 and np.abs(obs["agent"]).sum() > 0
    assert env.alive["agent"].all() and env.action_mask["agent"].all() and env.state is None
    assert env.action_mask["agent"].shape == (E, 2, 9 if not continuous else 1)
    before = obs["agent"].copy()
    r, te, tr, fin = env.step(random_actions(env, np.random.default_rng(0)))
    for a, dt in ((r, np.float32), (te, bool), (tr, bool)):
        assert a["agent"].shape == (E, 2) and a["agent"].dtype == dt
    assert not np.array_equal(before, env.obs["agent"]) and fin == [] and not tr["agent"].any()
    assert np.array_equal(env.episode_lengths(), np.ones(E))


def test_max_steps_truncation_final_obs_and_episode_stats():
    E, T = 3, 5
    env, twin = VmasEnv("navigation", E, 7, NAV), VmasEnv("navigation", E, 7, {**NAV, "max_steps": 50})
    env.reset(), twin.reset()
    out, long = run(env, T), run(twin, T)
    for t in range(T - 1):
        assert not out[t][3].any() and out[t][4] == []
    _, _, te, tr, fin = out[-1]
    assert tr.all() and not te.any()
    assert np.array_equal(env.final_obs["agent"], long[-1][0])  # the twin, not truncated, is where env ended
    assert not np.array_equal(env.obs["agent"], long[-1][0])  # env already holds its next episode's first obs
    assert [(f.env, f.length) for f in fin] == [(i, T) for i in range(E)]
    returns = sum(o[1] for o in out).sum(axis=1)
    assert np.allclose([f.returns["agent"] for f in fin], returns, rtol=1e-5)
    assert np.array_equal(env.episode_lengths(), np.zeros(E))
    run(env, 1)
    assert not env.final_obs["agent"].any()  # cleared by the next step


def test_same_seed_same_episodes_other_seed_other():
    a, b, c = (VmasEnv("navigation", 4, s, NAV) for s in (3, 3, 4))
    for e in (a, b, c):
        e.reset()
    assert np.array_equal(a.obs["agent"], b.obs["agent"]) and not np.array_equal(a.obs["agent"], c.obs["agent"])
    assert same(run(a, 8), run(b, 8)) and not same(run(b, 8, seed=1), run(c, 8, seed=1))


def noisy(env):
    """Observation noise drawn inside VMAS (as joint_passage_size's obs_noise does), in every step and reset."""
    scenario = env.env.scenario
    clean = scenario.observation
    scenario.observation = lambda agent: clean(agent) + 0.1 * torch.randn(env.num_envs, 18)
    return env


@pytest.mark.parametrize("noise", [False, True])
def test_restore_seeds_is_exact_and_the_global_rng_untouched(noise):
    torch.manual_seed(123)
    np.random.seed(5)
    t_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    make = (lambda seed: noisy(VmasEnv("navigation", 4, seed, NAV))) if noise else \
        (lambda seed: VmasEnv("navigation", 4, seed, NAV))
    env = make(11)
    env.reset()
    run(env, 5)  # one whole episode: every copy starts its second now
    saved, start = env.seeds_state(), env.obs["agent"].copy()
    bystander = make(5)  # VMAS keeps one RNG state for all its envs in a process: another env's steps draw from it
    bystander.reset()
    after = run(env, 12, seed=2, between=lambda: run(bystander, 1))  # crosses two more episode ends
    other = make(99)
    other.reset()
    run(other, 3)
    other.restore_seeds(saved)
    assert np.array_equal(other.seeds_state(), saved) and np.array_equal(other.episode_lengths(), np.zeros(4))
    assert np.array_equal(other.obs["agent"], start)
    assert same(after, run(other, 12, seed=2))
    assert torch.equal(torch.get_rng_state(), t_state)  # resets, steps and restores drew nothing from it
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_copies_reset_alone_depend_on_their_own_seed_only():
    E = 3
    a, b = VmasEnv("navigation", E, 0, NAV), VmasEnv("navigation", E, 0, NAV)
    a.restore_seeds(np.array([10, 20, 30, 0, 3]))
    b.restore_seeds(np.array([11, 20, 31, 0, 3]))
    assert np.array_equal(a.obs["agent"][1], b.obs["agent"][1]) and not np.array_equal(a.obs["agent"][0],
                                                                                     b.obs["agent"][0])
    saved = a.seeds_state()
    assert np.array_equal(saved, [10, 20, 30, 0, 3])
    first = run(a, 3)
    a.restore_seeds(saved)
    assert same(first, run(a, 3))


def poison(env, monkeypatch, copy: int, at: int):
    """From the ``at``-th step on, VMAS hands back NaN in copy ``copy``'s first agent's observation."""
    step, calls = env.env.step, [0]

    def bad(actions):
        obs, rew, te, tr, info = step(actions)
        calls[0] += 1
        if calls[0] >= at:
            obs[0][copy, 0] = float("nan")
        return obs, rew, te, tr, info

    monkeypatch.setattr(env.env, "step", bad)


def test_nan_resets_the_copy_under_reset(monkeypatch, capsys):
    env = VmasEnv("navigation", 3, 0, {**NAV, "max_steps": 50}, on_error="reset", max_errors=2)
    env.reset()
    run(env, 2)
    poison(env, monkeypatch, 1, 1)
    last, seeds = env.obs["agent"].copy(), env.seeds_state()
    r, te, tr, fin = env.step(random_actions(env, np.random.default_rng(0)))
    assert env.failed == [1] and env.errors == 1 and fin == []
    assert tr["agent"][1].all() and not te["agent"][1].any() and not r["agent"][1].any()
    assert not tr["agent"][[0, 2]].any()
    assert np.array_equal(env.final_obs["agent"][1], last[1]) and not env.final_obs["agent"][[0, 2]].any()
    assert not np.isnan(env.obs["agent"]).any() and env.episode_lengths().tolist() == [3, 0, 3]
    assert env.seeds_state()[1] != seeds[1] and env.seeds_state()[-1] == seeds[-1] + 1  # the stream's next seed
    assert "env copy 1 raised in step()" in capsys.readouterr().err
    env.step(random_actions(env, np.random.default_rng(0)))
    with pytest.raises(RuntimeError, match="more than actors.max_env_errors=2"):
        env.step(random_actions(env, np.random.default_rng(0)))


def test_nan_aborts_under_abort(monkeypatch):
    env = VmasEnv("navigation", 3, 0, NAV)
    env.reset()
    poison(env, monkeypatch, 2, 2)
    env.step(random_actions(env, np.random.default_rng(0)))
    with pytest.raises(FloatingPointError, match="env copy 2 returned NaN"):
        env.step(random_actions(env, np.random.default_rng(0)))


def test_sampler_collects_an_unroll_with_mappo():
    from hpcmarl.algos.base import make_inference
    from hpcmarl.algos.ppo import PPOConfig
    from hpcmarl.comm.spec import META_INDEX, unroll_spec
    from hpcmarl.sampler import Sampler

    E, T = 4, 5
    torch.manual_seed(0)
    env = VmasEnv("navigation", E, 1, NAV)
    policy = make_inference(env.spec, PPOConfig(name="mappo", hidden=16, layers=1))  # Gaussian head
    sampler = Sampler(env, policy, unroll_spec(env.spec, T, E), T)
    rec = sampler.collect(unroll_spec(env.spec, T, E).alloc())
    act = rec["agent/action"]
    assert act.shape == (T, E, 2, 2) and np.isfinite(rec["agent/logp"]).all() and act.std() > 0
    assert rec["agent/obs"].shape == (T + 1, E, 2, 18) and (np.abs(rec["agent/obs"]).sum(axis=(2, 3)) > 0).all()
    assert rec["agent/truncated"][T - 1].all() and not rec["agent/truncated"][:T - 1].any()
    assert (np.abs(rec["agent/final_obs"][T - 1]).sum(axis=(1, 2)) > 0).all()
    assert rec["meta"][META_INDEX["n_episodes"]] == E and rec["meta"][META_INDEX["env_steps"]] == T * E
    assert np.array_equal(rec["episodes"][:E, :2], [[i, T] for i in range(E)])
    assert np.allclose(rec["episodes"][:E, 2], rec["agent/reward"].sum(axis=(0, 2)), rtol=1e-5)
    assert np.array_equal(rec["env_seeds"], env.seeds_state())
