"""VecEnv, policy groups and env specs (counting_v0 fake from hpcmarl.testing plus real PettingZoo envs)."""
from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv

from hpcmarl import envs as E
from hpcmarl.envs import EnvError, VecEnv, make_parallel_env, probe_spec, resolve_groups


def zeros_actions(venv):
    return {g.name: np.zeros((venv.num_envs, g.n), np.int64) for g in venv.spec.groups}


# ------------------------------------------------------------------------------------------------
# counting_v0
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_agents,max_cycles,num_envs", [(2, 5, 3), (3, 1, 1), (1, 4, 2)])
def test_counting_obs_is_step_index_and_autoreset(n_agents, max_cycles, num_envs):
    venv = VecEnv("counting_v0", num_envs, seed=0, kwargs={"n_agents": n_agents, "max_cycles": max_cycles})
    (g,) = venv.spec.groups
    assert g.name == "agent" and g.n == n_agents and g.obs_dim == 2 and g.discrete and g.n_actions == 3
    obs = venv.reset()
    assert obs["agent"].shape == (num_envs, n_agents, 2) and obs["agent"].dtype == np.float32
    agent_idx = np.arange(n_agents, dtype=np.float32)
    stats = []
    n_steps = 3 * max_cycles + 2
    for k in range(1, n_steps + 1):
        expected_t = k % max_cycles  # reset observation (0) right after an episode ended
        rew, term, trunc, finished = venv.step(zeros_actions(venv))
        o = venv.obs["agent"]
        np.testing.assert_array_equal(o[..., 0], np.full((num_envs, n_agents), expected_t, np.float32))
        np.testing.assert_array_equal(o[..., 1], np.broadcast_to(agent_idx, (num_envs, n_agents)))
        assert venv.alive["agent"].all()
        assert venv.action_mask["agent"].all() and venv.action_mask["agent"].shape == (num_envs, n_agents, 3)
        np.testing.assert_array_equal(rew["agent"], np.ones((num_envs, n_agents), np.float32))
        assert not term["agent"].any()
        ends = k % max_cycles == 0
        assert trunc["agent"].all() == ends and trunc["agent"].any() == ends
        if ends:
            assert sorted(s.env for s in finished) == list(range(num_envs))
        else:
            assert finished == []
        stats += finished
    assert len(stats) == num_envs * (n_steps // max_cycles)
    for s in stats:
        assert isinstance(s, E.EpisodeStat)
        assert s.length == max_cycles
        assert s.returns == {"agent": pytest.approx(float(n_agents * max_cycles))}
    venv.close()


def test_counting_dead_agent():
    M, D = 7, 3
    venv = VecEnv("counting_v0", 2, seed=0, kwargs={"n_agents": 2, "max_cycles": M, "die_at": D})
    venv.reset()
    finished_all = []
    for k in range(1, 2 * M + 1):
        rew, term, trunc, finished = venv.step(zeros_actions(venv))
        t = k % M  # step index within the episode after this step (0 = just reset)
        k_in_ep = (k - 1) % M + 1  # step number that was just taken within its episode
        obs, alive = venv.obs["agent"], venv.alive["agent"]
        # agent_0 always alive, observing the step index
        assert alive[:, 0].all()
        np.testing.assert_array_equal(obs[:, 0, 0], np.full(2, t, np.float32))
        np.testing.assert_array_equal(rew["agent"][:, 0], np.ones(2))
        # agent_1 dies at step D of every episode and stays dead (zero obs, no reward) until the reset
        dead_after = D <= k_in_ep < M
        assert (~alive[:, 1]).all() == dead_after and alive[:, 1].all() == (not dead_after)
        if dead_after:
            np.testing.assert_array_equal(obs[:, 1], np.zeros((2, 2), np.float32))
        else:
            np.testing.assert_array_equal(obs[:, 1], np.array([[t, 1]] * 2, np.float32))
        np.testing.assert_array_equal(rew["agent"][:, 1], np.full(2, 1.0 if k_in_ep <= D else 0.0))
        np.testing.assert_array_equal(term["agent"][:, 1], np.full(2, k_in_ep == D))
        assert not term["agent"][:, 0].any()
        finished_all += finished
    assert len(finished_all) == 4
    for s in finished_all:
        assert s.length == M
        assert s.returns["agent"] == pytest.approx(M + D)


def test_episode_seeds_continue_and_restore_exactly():
    """Every episode starts from the next seed of the stream; restoring the seeds state restarts each copy's
    current episode (exactly where it was when the episodes had just started) and continues the stream."""
    from hpcmarl.envs.vec import episode_seed

    a = VecEnv("simple_spread_v3", 2, seed=5, kwargs={"N": 2, "max_cycles": 3})
    a.reset()
    assert list(a.seeds_state()) == [episode_seed(5, 0), episode_seed(5, 1), 5, 2]
    acts = {"agent": np.zeros((2, 2), np.int64)}
    for _ in range(3):  # the episodes end together and restart from seeds 2 and 3
        a.step(acts)
    state, obs = a.seeds_state(), a.obs["agent"].copy()
    assert list(state) == [episode_seed(5, 2), episode_seed(5, 3), 5, 4]
    later = [a.step(acts)[0]["agent"].copy() for _ in range(6)]
    b = VecEnv("simple_spread_v3", 2, seed=99, kwargs={"N": 2, "max_cycles": 3})
    b.reset()
    b.restore_seeds(state)
    np.testing.assert_array_equal(b.obs["agent"], obs)
    np.testing.assert_array_equal(np.stack([b.step(acts)[0]["agent"] for _ in range(6)]), np.stack(later))
    assert list(b.seeds_state()) == list(a.seeds_state())
    a.close(), b.close()


def test_reset_is_seeded_per_copy():
    a = VecEnv("simple_spread_v3", 3, seed=5, kwargs={"N": 2}, with_state=True)
    b = VecEnv("simple_spread_v3", 3, seed=5, kwargs={"N": 2})
    c = VecEnv("simple_spread_v3", 3, seed=6, kwargs={"N": 2})
    oa, ob, oc = a.reset()["agent"].copy(), b.reset()["agent"].copy(), c.reset()["agent"].copy()
    np.testing.assert_array_equal(oa, ob)
    assert not np.array_equal(oa, oc)
    assert not np.array_equal(oa[0], oa[1])  # copies get different seeds (the stream of seed 5)
    # with_state: the global state is maintained next to the observations; without it, none is computed
    assert b.state is None and b.spec.state_dim == 0
    assert a.state is not None and a.state.shape == (3, a.spec.state_dim)
    np.testing.assert_array_equal(a.state[2], np.asarray(a.envs[2].state(), np.float32).reshape(-1))
    for v in (a, b, c):
        v.close()


def test_obs_transform_applied():
    venv = VecEnv("counting_v0", 2, seed=0, kwargs={"max_cycles": 4}, obs_transform=lambda o: o * 10 + 1)
    venv.reset()
    venv.step(zeros_actions(venv))
    np.testing.assert_array_equal(venv.obs["agent"][..., 0], np.full((2, 2), 11.0))
    np.testing.assert_array_equal(venv.obs["agent"][..., 1], np.array([[1.0, 11.0]] * 2))


# ------------------------------------------------------------------------------------------------
# groups
# ------------------------------------------------------------------------------------------------
AGENTS = ["adversary_0", "adversary_1", "agent_0", "agent_1"]


def test_resolve_groups_default_map():
    g = resolve_groups(AGENTS, None, "simple_tag_v3")
    assert g == {"adversary": ["adversary_0", "adversary_1"], "agent": ["agent_0", "agent_1"]}


def test_resolve_groups_exact_before_pattern_and_map_order():
    pmap = {"everyone": ["*"], "special": ["agent_1"]}
    g = resolve_groups(AGENTS, pmap, "x")
    assert g == {"everyone": ["adversary_0", "adversary_1", "agent_0"], "special": ["agent_1"]}
    # among patterns the first group in map order wins
    g = resolve_groups(AGENTS, {"good": ["agent_*"], "rest": ["*_0", "*_1"]}, "x")
    assert g == {"good": ["agent_0", "agent_1"], "rest": ["adversary_0", "adversary_1"]}


def test_resolve_groups_first_pattern_wins_empty_group_errors():
    with pytest.raises(EnvError) as ei:
        resolve_groups(AGENTS, {"a": ["a*"], "b": ["agent_*"]}, "simple_tag_v3")
    assert "'b'" in str(ei.value) and "simple_tag_v3" in str(ei.value)


def test_resolve_groups_patterns_and_exact_names():
    g = resolve_groups(AGENTS, {"adv": ["adversary_?"], "good": ["agent_0", "agent_1"]}, "x")
    assert g == {"adv": ["adversary_0", "adversary_1"], "good": ["agent_0", "agent_1"]}
    g = resolve_groups(AGENTS, {"even": ["*_0"], "odd": ["*_1"]}, "x")
    assert g == {"even": ["adversary_0", "agent_0"], "odd": ["adversary_1", "agent_1"]}
    # patterns are case-sensitive
    with pytest.raises(EnvError):
        resolve_groups(AGENTS, {"all": ["Agent_*", "adversary_*"]}, "x")


def test_resolve_groups_unmatched_agent():
    with pytest.raises(EnvError) as ei:
        resolve_groups(AGENTS, {"adv": ["adversary_*"], "a0": ["agent_0"]}, "simple_tag_v3")
    msg = str(ei.value)
    assert "'agent_1'" in msg and "simple_tag_v3" in msg


def test_resolve_groups_empty_group():
    with pytest.raises(EnvError) as ei:
        resolve_groups(AGENTS, {"all": ["*"], "nobody": ["pursuer_*"]}, "simple_tag_v3")
    assert "'nobody'" in str(ei.value)


def test_group_mixing_spaces_is_rejected():
    with pytest.raises(EnvError) as ei:
        probe_spec("simple_tag_v3", {}, {"all": ["*"]})
    assert "'all'" in str(ei.value)


def test_custom_policy_map_in_vecenv():
    venv = VecEnv("counting_v0", 2, seed=0, kwargs={"n_agents": 3, "max_cycles": 3},
                  policy_map={"solo": ["agent_1"], "rest": ["agent_*"]})
    assert [(g.name, g.agents) for g in venv.spec.groups] == [("solo", ["agent_1"]), ("rest", ["agent_0", "agent_2"])]
    venv.reset()
    acts = {"solo": np.zeros((2, 1), np.int64), "rest": np.zeros((2, 2), np.int64)}
    venv.step(acts)
    np.testing.assert_array_equal(venv.obs["solo"][:, :, 1], np.ones((2, 1)))
    np.testing.assert_array_equal(venv.obs["rest"][:, :, 1], np.array([[0, 2]] * 2))
    for _ in range(2):
        rew, _, _, finished = venv.step(acts)
    assert [s.returns for s in finished] == [{"solo": 3.0, "rest": 6.0}] * 2


# ------------------------------------------------------------------------------------------------
# real environments
# ------------------------------------------------------------------------------------------------
def test_simple_tag_default_groups():
    spec = probe_spec("simple_tag_v3")
    assert [g.name for g in spec.groups] == ["adversary", "agent"]
    adv, good = spec.group("adversary"), spec.group("agent")
    assert adv.obs_dim == 16 and good.obs_dim == 14
    assert adv.n == 3 and good.n == 1  # simple_tag defaults: 3 adversaries, 1 good agent
    assert adv.discrete and good.discrete and adv.n_actions == good.n_actions == 5
    assert spec.joint_obs_dim == 3 * 16 + 14
    assert spec.agents == adv.agents + good.agents


def test_simple_tag_vecenv_steps():
    venv = VecEnv("simple_tag_v3", 2, seed=1, kwargs={"max_cycles": 3})
    venv.reset()
    assert venv.obs["adversary"].shape == (2, 3, 16) and venv.obs["agent"].shape == (2, 1, 14)
    rng = np.random.default_rng(0)
    eps = []
    for _ in range(3):
        acts = {g.name: rng.integers(0, g.n_actions, (2, g.n)) for g in venv.spec.groups}
        rew, term, trunc, finished = venv.step(acts)
        eps += finished
    assert len(eps) == 2 and all(s.length == 3 for s in eps)
    assert set(eps[0].returns) == {"adversary", "agent"}


def test_pursuit_spec():
    spec = probe_spec("pursuit_v5")
    (g,) = spec.groups
    assert g.name == "pursuer" and g.n == 8
    assert g.obs_dim == 7 * 7 * 3 == 147
    assert g.discrete and g.n_actions == 5


def test_unknown_env():
    with pytest.raises(EnvError) as ei:
        make_parallel_env("no_such_env_v0")
    assert "no_such_env_v0" in str(ei.value)
    with pytest.raises(EnvError):
        VecEnv("no_such_env_v0", 1, 0)


def test_bad_env_kwargs():
    with pytest.raises(EnvError) as ei:
        make_parallel_env("counting_v0", {"bogus": 1})
    assert "counting_v0" in str(ei.value) and "bogus" in str(ei.value)


# ------------------------------------------------------------------------------------------------
# action masks (a fake env registered for the test)
# ------------------------------------------------------------------------------------------------
class MaskEnv(ParallelEnv):
    """Dict observations with an action mask for agent_0, info masks for agent_1."""

    metadata = {"name": "mask_v0"}

    def __init__(self):
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents = []
        self.t = 0

    def observation_space(self, agent):
        return spaces.Dict({"observation": spaces.Box(-1, 1, (3,), np.float32),
                            "action_mask": spaces.MultiBinary(4)})

    def action_space(self, agent):
        return spaces.Discrete(4)

    def _obs(self):
        m = np.zeros(4, np.int8)
        m[self.t % 4] = 1
        return {"agent_0": {"observation": np.full(3, self.t, np.float32), "action_mask": m},
                "agent_1": np.full(3, -self.t, np.float32)}

    def _infos(self):
        m = np.ones(4, np.int8)
        m[self.t % 4] = 0
        return {"agent_0": {}, "agent_1": {"action_mask": m}}

    def reset(self, seed=None, options=None):
        self.t = 0
        self.agents = list(self.possible_agents)
        return self._obs(), self._infos()

    def step(self, actions):
        self.t += 1
        done = self.t >= 10
        obs = self._obs()
        r = {a: 0.0 for a in self.agents}
        term = {a: False for a in self.agents}
        trunc = {a: done for a in self.agents}
        infos = self._infos()
        if done:
            self.agents = []
        return obs, r, term, trunc, infos


def test_action_masks_from_obs_and_infos(monkeypatch):
    monkeypatch.setitem(E.REGISTRY, "mask_v0", E.EnvEntry(f"{__name__}:MaskEnv", {"all": ["agent_*"]}))
    venv = VecEnv("mask_v0", 1, seed=0)
    (g,) = venv.spec.groups
    assert g.obs_dim == 3 and g.n_actions == 4
    venv.reset()
    for t in range(0, 3):
        if t:
            venv.step({"all": np.zeros((1, 2), np.int64)})
        m = venv.action_mask["all"][0]
        np.testing.assert_array_equal(m[0], np.arange(4) == t % 4)
        np.testing.assert_array_equal(m[1], np.arange(4) != t % 4)
        np.testing.assert_array_equal(venv.obs["all"][0], np.array([[t] * 3, [-t] * 3], np.float32))


# ------------------------------------------------------------------------------------------------
# Sampler records (the unrolls actors send)
# ------------------------------------------------------------------------------------------------
def test_sampler_records_follow_the_env(collect):
    import torch

    from hpcmarl.comm.spec import META_INDEX
    from hpcmarl.models import checksum, flat_params

    T, E, U, Mx, Dx = 5, 3, 3, 4, 2
    torch.manual_seed(0)
    probe = collect("counting_v0", 1, 1, 0, {"n_agents": 2, "max_cycles": Mx, "die_at": Dx})
    from hpcmarl.models import Inference

    flat = flat_params(Inference(probe.venv.spec, 16, 1).params)
    c = collect("counting_v0", T, E, U, {"n_agents": 2, "max_cycles": Mx, "die_at": Dx}, flat=flat, version=4)
    pol = c.policy.policies["agent"]
    for u, rec in enumerate(c.records):
        s = u * T + np.arange(T + 1)  # global step index of each observation row
        t_in_ep = s % Mx
        obs, alive = rec["agent/obs"], rec["agent/alive"]
        for i in range(E):
            np.testing.assert_array_equal(obs[:, i, 0, 0], t_in_ep)
            np.testing.assert_array_equal(alive[:, i, 1], (t_in_ep < Dx).astype(np.uint8))
            np.testing.assert_array_equal(obs[:, i, 1, 0], np.where(t_in_ep < Dx, t_in_ep, 0))
        done = ((s[:T] + 1) % Mx == 0).astype(np.uint8)
        np.testing.assert_array_equal(rec["env_done"], np.repeat(done[:, None], E, 1))
        np.testing.assert_array_equal(rec["agent/truncated"][:, :, 0], np.repeat(done[:, None], E, 1))
        np.testing.assert_array_equal(rec["agent/reward"][:, :, 1], (t_in_ep[:T, None] < Dx) * np.ones((1, E)))
        m = rec["meta"]
        n_ep = int(m[META_INDEX["n_episodes"]])
        assert n_ep == done.sum() * E
        assert m[META_INDEX["version"]] == 4 and m[META_INDEX["env_steps"]] == T * E
        assert m[META_INDEX["param_checksum"]] == pytest.approx(checksum(flat))
        eps = rec["episodes"][:n_ep]
        np.testing.assert_array_equal(np.sort(eps[:, 0]), np.sort(np.tile(np.arange(E), done.sum())))
        np.testing.assert_array_equal(eps[:, 1], Mx)
        np.testing.assert_array_equal(eps[:, 2], Mx + Dx)
        # stored log-probs are those of the stored actions under the policy that acted
        with torch.no_grad():
            d = pol.dist(torch.from_numpy(obs[:T]), torch.from_numpy(rec["agent/action_mask"].astype(bool)))
            lp = d.log_prob(torch.from_numpy(rec["agent/action"])).numpy()
        np.testing.assert_allclose(rec["agent/logp"], lp, rtol=1e-5, atol=1e-6)
        assert ((rec["agent/action"] >= 0) & (rec["agent/action"] < 3)).all()
    np.testing.assert_array_equal(c.records[-1]["rng"], torch.get_rng_state().numpy())


def test_an_unrolls_episodes_become_rows_read_and_written_by_name(collect, tmp_path):
    """The finished episodes of an unroll (hpcmarl.comm.spec.EPISODE) become the learners' episode rows
    (hpcmarl.roles.common.EPISODE_ROW), every one of whose names is a column of run.h5's /episodes."""
    from hpcmarl.comm.spec import META_INDEX
    from hpcmarl.models import Inference, flat_params
    from hpcmarl.roles.common import EPISODE_ROW, unroll_episodes
    from hpcmarl.storage.writers import RunWriter

    T, E, Mx, Dx = 5, 3, 4, 2
    kw = {"n_agents": 2, "max_cycles": Mx, "die_at": Dx}
    probe = collect("counting_v0", 1, 1, 0, kw)
    c = collect("counting_v0", T, E, 1, kw, flat=flat_params(Inference(probe.venv.spec, 16, 1).params), version=7)
    rec = c.records[0]
    rec["meta"][META_INDEX["actor"]] = 3
    names = [*EPISODE_ROW, "return/agent", "won"]
    rows = [dict(zip(names, r, strict=True)) for r in unroll_episodes(rec)]
    assert sorted(r["env"] for r in rows) == list(range(E))  # one episode per copy ended within the 5 steps
    for r in rows:
        assert (r["actor"], r["length"], r["policy_version"], r["return/agent"]) == (3, Mx, 7, Mx + Dx)
        assert np.isnan(r["won"])  # the counting env does not say
    w = RunWriter(str(tmp_path / "run.h5"), {}, ["agent"])
    try:
        assert set(names) <= set(w.episodes.cols)
    finally:
        w.close()


def test_aec_environment_goes_through_the_parallel_conversion(monkeypatch):
    """A registry entry whose factory returns an AEC env is converted with aec_to_parallel."""
    from pettingzoo.utils.env import ParallelEnv

    from hpcmarl import envs as E

    monkeypatch.setitem(E.REGISTRY, "spread_aec", E.EnvEntry("mpe2.simple_spread_v3:env", {"agent": ["agent_*"]},
                                                             {"N": 2, "max_cycles": 4}))
    env = E.make_parallel_env("spread_aec")
    assert isinstance(env, ParallelEnv) or hasattr(env, "aec_env")
    v = VecEnv("spread_aec", 2, seed=0)
    v.reset()
    lengths = []
    for _ in range(8):
        _, _, _, finished = v.step({"agent": np.zeros((2, 2), np.int64)})
        lengths += [f.length for f in finished]
    assert lengths == [4, 4, 4, 4]
    v.close()


# ------------------------------------------------------------------------------------------------
# environments by import path ("module:callable")
# ------------------------------------------------------------------------------------------------
def not_an_env():
    return {"agents": []}


def raising_env():
    raise RuntimeError("simulator licence not found")


@pytest.fixture
def named():
    """The env paths these tests import, named as a Python caller names them (hpcmarl.trust refuses the rest)."""
    from hpcmarl import trust

    with trust.allowing(["mpe2.simple_adversary_v3:parallel_env", "examples.walk_env:parallel_env",
                         "pettingzoo.classic.connect_four_v3:env", "hpcmarl.envs.adapters:rware"]):
        yield


def test_prefix_groups():
    assert E.prefix_groups(["adversary_0", "agent_0", "agent_1", "boss"]) == {
        "adversary": ["adversary_0"], "agent": ["agent_0", "agent_1"], "boss": ["boss"]}


def test_env_by_import_path_groups_by_prefix_and_steps(named):
    path = "mpe2.simple_adversary_v3:parallel_env"
    e = E.entry(path, {"max_cycles": 5})
    assert e.groups == {"adversary": ["adversary_0"], "agent": ["agent_0", "agent_1"]}
    assert not e.cooperative and not e.turn_based
    venv = VecEnv(path, 2, seed=0, kwargs={"max_cycles": 5})
    assert [(g.name, g.n, g.obs_dim) for g in venv.spec.groups] == [("adversary", 1, 8), ("agent", 2, 10)]
    venv.reset()
    for _ in range(5):
        rew, term, trunc, fin = venv.step(zeros_actions(venv))
    assert len(fin) == 2 and trunc["agent"].all()
    assert venv.final_obs["agent"].any()  # the truncated episode's final observations are kept
    venv.close()


def test_example_env_is_cooperative_and_turn_based_games_are_detected(named):
    assert E.entry("examples.walk_env:parallel_env").cooperative
    assert E.entry("pettingzoo.classic.connect_four_v3:env").turn_based
    with pytest.raises(EnvError, match="turn-based"):
        make_parallel_env("pettingzoo.classic.connect_four_v3:env")


@pytest.mark.parametrize("path,message", [
    ("no_such_module_xyz:env", "cannot import 'no_such_module_xyz'"),
    ("mpe2.simple_adversary_v3:nope", "has no callable 'nope'"),
    (f"{__name__}:not_an_env", "returned dict, not a PettingZoo"),
    (f"{__name__}:raising_env", "raised RuntimeError: simulator licence not found"),
    ("nosuch_env", "unknown environment 'nosuch_env'"),
])
def test_bad_env_paths_give_one_line_errors(path, message):
    from hpcmarl import trust

    with trust.allowing([path]), pytest.raises(EnvError, match=message) as info:  # named: the env's own errors
        E.entry(path)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------
# Gymnasium multi-agent suites (LBF, RWARE) through hpcmarl.envs.adapters
# ------------------------------------------------------------------------------------------------
class _TupleGame:
    """A Gymnasium-style multi-agent game: tuple spaces, reward list, one done flag after ``end`` steps."""

    def __init__(self, end):
        self.observation_space = spaces.Tuple([spaces.Box(0, 9, (1,), np.float32)] * 2)
        self.action_space = spaces.Tuple([spaces.Discrete(2)] * 2)
        self.end, self.t = end, 0

    def reset(self, seed=None):
        self.t = 0
        return (np.zeros(1), np.zeros(1)), {}

    def step(self, actions):
        self.t += 1
        return (np.full(1, self.t), np.full(1, self.t)), [1.0, 0.5], self.t >= self.end, False, {}

    def close(self):
        pass


@pytest.mark.parametrize("end,limit,terminated", [(3, 10, True), (10, 4, False)])
def test_gym_adapter_time_limit_is_a_truncation(end, limit, terminated):
    from hpcmarl.envs.adapters import GymMultiAgent

    env = GymMultiAgent(_TupleGame(end), "tuple_game", limit)
    obs, _ = env.reset(seed=0)
    assert list(obs) == ["agent_0", "agent_1"]
    for t in range(min(end, limit)):
        obs, rew, te, tr, _ = env.step({"agent_0": 1, "agent_1": 0})
    assert rew == {"agent_0": 1.0, "agent_1": 0.5} and not env.agents
    assert (te == {"agent_0": terminated, "agent_1": terminated}
            and tr == {"agent_0": not terminated, "agent_1": not terminated})


@pytest.mark.parametrize("name,kwargs,obs_dim,n_actions", [("lbf", {"max_cycles": 5}, 12, 6),
                                                           ("hpcmarl.envs.adapters:rware", {"max_cycles": 5}, 71, 5)])
def test_lbf_and_rware_step_as_parallel_envs(name, kwargs, obs_dim, n_actions, named):
    venv = VecEnv(name, 2, seed=0, kwargs=kwargs)
    (g,) = venv.spec.groups
    assert (g.name, g.n, g.obs_dim, g.n_actions) == ("agent", 2, obs_dim, n_actions)
    venv.reset()
    for _ in range(5):
        rew, term, trunc, fin = venv.step(zeros_actions(venv))  # action 0 = no-op: nothing collected, nothing ends
    assert len(fin) == 2 and all(f.length == 5 for f in fin)
    assert trunc["agent"].all() and not term["agent"].any() and venv.final_obs["agent"].any()
    venv.close()


def test_gym_adapter_scales_bounded_observations():
    """Entries with finite bounds are divided by their largest magnitude (LBF's raw grid coordinates blew up QMIX's
    Q-values) with ``scale_obs=True``; the default keeps them; unbounded entries are never touched."""
    from hpcmarl.envs.adapters import GymMultiAgent, obs_scale

    env = GymMultiAgent(_TupleGame(5), "tuple_game", 10, scale_obs=True)
    assert env.observation_space("agent_0").high.tolist() == [1.0]
    env.reset(seed=0)
    for t in range(1, 4):
        obs = env.step({"agent_0": 1, "agent_1": 0})[0]
        assert obs["agent_0"].tolist() == pytest.approx([t / 9])
    raw = GymMultiAgent(_TupleGame(5), "tuple_game", 10)
    raw.reset(seed=0)
    assert raw.step({"agent_0": 1, "agent_1": 0})[0]["agent_0"].tolist() == [1.0]
    assert raw.observation_space("agent_0").high.tolist() == [9.0]
    assert obs_scale(spaces.Box(-np.inf, np.inf, (3,), np.float32)) is None
    k = obs_scale(spaces.Box(np.array([-4.0, 0.0, 0.0]), np.array([2.0, 0.0, np.inf]), dtype=np.float32))
    assert k.tolist() == [0.25, 1.0, 1.0]
    venv = VecEnv("lbf", 2, seed=0, kwargs={"max_cycles": 20, "scale_obs": True})
    venv.reset()
    seen = [venv.obs["agent"].copy()]
    for _ in range(20):
        venv.step(zeros_actions(venv))
        seen.append(venv.obs["agent"].copy())
    seen = np.stack(seen)
    assert seen.max() <= 1.0 and seen.min() >= -1.0 and seen.max() > 0.3  # positions spread over [0, 1]
    venv.close()


@pytest.mark.parametrize("name,kwargs", [("simple_spread_v3", {}), ("simple_tag_v3", {}),
                                         ("simple_spread_v3", {"continuous_actions": True})])
def test_parallel_env_without_check_wrappers_steps_identically(name, kwargs):
    """make_parallel_env drops PettingZoo's check-only wrappers (order enforcing, action bounds assertion) from an
    AEC->parallel env: the same trajectories as the env with its checks; wrappers that act (clipping) stay."""
    from pettingzoo.utils.wrappers import AssertOutOfBoundsWrapper, ClipOutOfBoundsWrapper, OrderEnforcingWrapper

    fast, checked = make_parallel_env(name, kwargs), make_parallel_env(name, kwargs, checks=True)
    assert type(fast.aec_env) not in (OrderEnforcingWrapper, AssertOutOfBoundsWrapper)
    assert type(checked.aec_env) is OrderEnforcingWrapper
    if kwargs.get("continuous_actions"):
        assert type(fast.aec_env) is ClipOutOfBoundsWrapper  # it changes actions: kept
    rng = np.random.default_rng(0)
    for ep in range(3):
        oa, _ = fast.reset(seed=ep)
        ob, _ = checked.reset(seed=ep)
        while fast.agents:
            act = {a: (rng.uniform(-0.5, 1.5, fast.action_space(a).shape).astype(np.float32)
                       if kwargs else int(rng.integers(fast.action_space(a).n))) for a in fast.agents}
            oa, ra, ta, ua, _ = fast.step(act)
            ob, rb, tb, ub, _ = checked.step(act)
            assert ra == rb and ta == tb and ua == ub and oa.keys() == ob.keys()
            assert all(np.array_equal(oa[a], ob[a]) for a in oa)
        assert not checked.agents
