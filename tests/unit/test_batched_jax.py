"""The JaxMARL adapter (hpcmarl.envs.jaxmarl) against the batched-env contract, and the registry's reserved prefixes."""
import numpy as np
import pytest

from launch import require_extra

require_extra("jaxmarl", "jax")

from hpcmarl import trust  # noqa: E402
from hpcmarl.config import ConfigError, from_dict  # noqa: E402
from hpcmarl.envs import EnvError, entry, make_batched_env, make_env, probe_spec  # noqa: E402
from hpcmarl.envs import jaxmarl as jm  # noqa: E402
from hpcmarl.envs.batched import episode_seed, episode_seeds  # noqa: E402

MPE = "MPE_simple_spread_v3"
SHORT = {"max_steps": 5}  # MPE episodes of max_steps + 1 = 6 steps


def random_actions(venv, rng):
    """Uniform legal actions of every group (masked ones never chosen)."""
    out = {}
    for g in venv.spec.groups:
        m = venv.action_mask[g.name]
        out[g.name] = (rng.random(m.shape) * m).argmax(-1)
    return out


def play(venv, steps, seed=0):
    """``steps`` steps with seeded random actions: per step (obs, rewards, terminated, truncated, finished)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        r, te, tr, fin = venv.step(random_actions(venv, rng))
        out.append(({k: v.copy() for k, v in venv.obs.items()}, {k: np.array(v) for k, v in r.items()},
                    {k: np.array(v) for k, v in te.items()}, {k: np.array(v) for k, v in tr.items()}, fin))
    return out


@pytest.fixture(scope="module")
def smax():
    venv = jm.JaxMarlEnv("HeuristicEnemySMAX", 8, 3, {"scenario": "3m"}, with_state=True)
    venv.reset()
    return venv


def test_episode_seeds_are_episode_seed_vectorised():
    for seed in (0, 7, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 40, -3):
        np.testing.assert_array_equal(episode_seeds(seed, 5, 300), [episode_seed(seed, 5 + k) for k in range(300)])
    first = 2 ** 32 - 2  # counters past 32 bits: the loop
    np.testing.assert_array_equal(episode_seeds(1, first, 4), [episode_seed(1, first + k) for k in range(4)])


def test_specs_of_mpe_and_smax():
    s = jm.probe(MPE)
    assert s.name == f"jaxmarl:{MPE}" and s.state_dim == 0
    (g,) = s.groups
    assert (g.name, g.agents, g.obs_dim, g.discrete, g.n_actions) == ("agent", ["agent_0", "agent_1", "agent_2"], 18,
                                                                      True, 5)
    with pytest.raises(EnvError, match="no global state"):
        jm.probe(MPE, with_state=True)
    s = probe_spec("jaxmarl:HeuristicEnemySMAX", {"scenario": "3m"}, with_state=True)  # the package's probe_spec
    (g,) = s.groups
    assert (g.name, g.n, g.obs_dim, g.n_actions) == ("ally", 3, 75, 8) and s.state_dim == 72
    split = jm.probe(MPE, policy_map={"a": ["agent_0"], "b": ["agent_1", "agent_2"]})
    assert [(g.name, g.n) for g in split.groups] == [("a", 1), ("b", 2)]
    with pytest.raises(EnvError, match="not a SMAX map"):
        jm.probe("HeuristicEnemySMAX", {"scenario": "3x"})
    with pytest.raises(EnvError, match="unknown JaxMARL environment"):
        jm.probe("NoSuchEnv")


def test_step_shapes_dtypes_and_truncation_at_the_time_limit():
    E = 4
    venv = jm.JaxMarlEnv(MPE, E, 0, SHORT)
    venv.reset()
    assert venv.obs["agent"].shape == (E, 3, 18) and venv.obs["agent"].dtype == np.float32
    assert venv.alive["agent"].all() and venv.action_mask["agent"].shape == (E, 3, 5)
    assert venv.action_mask["agent"].all() and venv.state is None and venv.final_state is None
    steps = play(venv, 6)
    for obs, r, te, tr, fin in steps[:5]:
        assert r["agent"].shape == (E, 3) and r["agent"].dtype == np.float32
        assert te["agent"].dtype == bool and tr["agent"].dtype == bool
        assert not te["agent"].any() and not tr["agent"].any() and fin == []
    obs, r, te, tr, fin = steps[5]
    assert tr["agent"].all() and not te["agent"].any()  # the time limit: truncated, not terminated
    assert [ep.env for ep in fin] == list(range(E)) and all(ep.length == 6 for ep in fin)
    for ep in fin:  # the return: the rewards of the episode's steps summed over the group's agents
        assert ep.returns["agent"] == pytest.approx(sum(float(s[1]["agent"][ep.env].sum()) for s in steps), rel=1e-6)
    assert np.abs(venv.final_obs["agent"]).sum(-1).all()  # every truncated agent kept its final observation
    assert not np.array_equal(venv.final_obs["agent"], venv.obs["agent"])  # obs: the next episode's first
    final = venv.final_obs["agent"].copy()
    assert venv.alive["agent"].all() and np.abs(venv.obs["agent"]).sum(-1).all()  # the next episodes, started
    # the k-th copy to end took the stream's k-th next seed (all ended at once: in index order)
    np.testing.assert_array_equal(venv.seeds_state()[:E], episode_seeds(0, E, E))
    np.testing.assert_array_equal(venv.episode_lengths(), np.zeros(E))
    assert venv.seeds_state()[-1] == 2 * E  # E first episodes + E resets
    play(venv, 1)
    assert not venv.final_obs["agent"].any()  # cleared by the next step

    # the final observation is the observation the copy would have seen next without the time limit
    long = jm.JaxMarlEnv(MPE, E, 0, {"max_steps": 50})
    long.reset()
    np.testing.assert_allclose(play(long, 6)[5][0]["agent"], final, rtol=1e-6)


@pytest.mark.parametrize("parts", [1, 2])
def test_seeds_reproduce_episodes_and_restore_is_exact(parts):
    a, b, c = (jm.JaxMarlEnv(MPE, 4, s, SHORT, parts=parts) for s in (5, 5, 6))
    for v in (a, b, c):
        v.reset()
    np.testing.assert_array_equal(a.obs["agent"], b.obs["agent"])
    assert not np.allclose(a.obs["agent"], c.obs["agent"])
    for x, y in zip(play(a, 6), play(b, 6)):
        np.testing.assert_array_equal(x[0]["agent"], y[0]["agent"])
        np.testing.assert_array_equal(x[1]["agent"], y[1]["agent"])

    # a resume: at an episode boundary (every episode just started), another env (another seed, not stepped) restored
    # from the seeds takes the next steps (across two auto-resets) exactly as the saved env does
    saved = a.seeds_state()
    ahead = play(a, 14, seed=1)
    c.restore_seeds(saved)
    again = play(c, 14, seed=1)
    for x, y in zip(ahead, again):
        for k in range(4):
            np.testing.assert_array_equal(x[k]["agent"], y[k]["agent"])
        assert [(e.env, e.length, e.returns) for e in x[4]] == [(e.env, e.length, e.returns) for e in y[4]]
    assert sum(len(x[4]) for x in ahead) == 8
    np.testing.assert_array_equal(a.seeds_state(), c.seeds_state())


def test_smax_masks_dead_units_and_state(smax):
    venv = smax
    assert not venv.action_mask["ally"].all()  # attack actions out of range are masked
    assert venv.state.shape == (8, 72) and np.abs(venv.state).sum() > 0
    rng = np.random.default_rng(0)
    died = ended = False
    for _ in range(200):
        before = venv.alive["ally"].copy()
        r, te, tr, fin = venv.step(random_actions(venv, rng))
        ended |= bool(fin)
        gone = before & ~venv.alive["ally"]
        gone[[ep.env for ep in fin]] = False  # copies that reset start with every unit alive
        for i, j in zip(*np.nonzero(gone)):
            died = True
            assert te["ally"][i, j] and not tr["ally"][i, j]  # the step it died: terminated
            assert not venv.obs["ally"][i, j].any() and venv.action_mask["ally"][i, j].all()
        dead = ~before
        assert not r["ally"][dead].any() and not te["ally"][dead].any()  # a dead unit neither earns nor ends
        for ep in fin:  # a battle won or lost before the time limit (100 steps) is terminated, not truncated
            assert ep.length < 100 and not tr["ally"][ep.env].any() and te["ally"][ep.env][before[ep.env]].all()
        if died and ended:
            break
    assert died and ended


def test_smax_episodes_are_won_as_jaxmarl_counts_them():
    """Six allied marines against one enemy, random legal actions: most battles are won. An episode is won exactly
    when its last step paid the win bonus (JaxMARL's SMAXLogWrapper: a reward >= 1 at the end), i.e. every enemy
    is dead while an ally lives; MPE episodes have no outcome (NaN)."""
    import jax.numpy as jnp
    from jaxmarl.environments.smax.smax_env import Scenario

    sc = Scenario(unit_types=jnp.zeros(7, jnp.uint8), num_allies=6, num_enemies=1, smacv2_position_generation=False,
                  smacv2_unit_type_generation=False)
    venv = jm.JaxMarlEnv("HeuristicEnemySMAX", 16, 0, {"scenario": sc})
    venv.reset()
    outcomes = []
    for _, r, _, _, fin in play(venv, 120):
        for ep in fin:
            assert ep.won in (0.0, 1.0)
            assert ep.won == float(r["ally"][ep.env].max() >= 1.0), (ep, r["ally"][ep.env])
            outcomes.append(ep.won)
    assert 0 < sum(outcomes) < len(outcomes)  # both outcomes seen
    mpe = jm.JaxMarlEnv(MPE, 4, 0, SHORT)
    mpe.reset()
    fin = [ep for *_, f in play(mpe, 6) for ep in f]
    assert fin and all(np.isnan(ep.won) for ep in fin)


def test_nan_in_a_copy_is_an_env_error(monkeypatch):
    """A copy whose step gives NaN observations is re-started under on_error=reset (its episode discarded, ending for
    learners by truncation at its last observation) and raises under abort."""
    import jax.numpy as jnp
    from jaxmarl.environments.mpe.simple_spread import SimpleSpreadMPE

    step_env = SimpleSpreadMPE.step_env

    def poisoned(self, key, state, actions):  # NaN in copies whose agent 0 is right of agent 1, at their 3rd step
        obs, st, rew, dones, info = step_env(self, key, state, actions)
        bad = (state.step == 2) & (state.p_pos[0, 0] > state.p_pos[1, 0])
        return {a: jnp.where(bad, jnp.nan, o) for a, o in obs.items()}, st, rew, dones, info

    monkeypatch.setattr(SimpleSpreadMPE, "step_env", poisoned)
    kw = {"max_steps": 9}  # a configuration no other test compiles (compiled functions are shared per configuration)
    try:
        venv = jm.JaxMarlEnv(MPE, 8, 1, kw, on_error="reset", max_errors=100)
        venv.reset()
        play(venv, 2)
        last = venv.obs["agent"].copy()
        seeds = venv.seeds_state()
        r, te, tr, fin = venv.step(random_actions(venv, np.random.default_rng(0)))
        bad = venv.failed
        assert 2 <= len(bad) < 8 and venv.errors == len(bad) and fin == []
        assert np.isfinite(venv.obs["agent"]).all() and np.isfinite(r["agent"]).all()
        assert tr["agent"][bad].all() and not te["agent"][bad].any() and not r["agent"][bad].any()
        np.testing.assert_array_equal(venv.final_obs["agent"][bad], last[bad])
        assert not venv.episode_lengths()[bad].any() and (np.delete(venv.episode_lengths(), bad) == 3).all()
        assert venv.seeds_state()[-1] == seeds[-1] + len(bad)  # re-started from the stream's next seeds
        assert (venv.seeds_state()[bad] == episode_seeds(venv.seed, int(seeds[-1]), len(bad))).all()

        venv = jm.JaxMarlEnv(MPE, 8, 1, kw, on_error="reset", max_errors=1)
        venv.reset()
        play(venv, 2)
        with pytest.raises(RuntimeError, match="more than actors.max_env_errors=1"):
            play(venv, 1)

        venv = jm.JaxMarlEnv(MPE, 8, 1, kw)  # on_error=abort
        venv.reset()
        play(venv, 2)
        with pytest.raises(FloatingPointError, match="NaN"):
            play(venv, 1)
    finally:
        jm._COMPILED.clear()  # no compiled function of the poisoned step outlives the test


def test_reserved_prefixes_need_no_trust_and_paths_still_do(monkeypatch):
    monkeypatch.setattr(trust, "_ALLOWED", set())  # a fresh process: nothing named
    name = f"jaxmarl:{MPE}"
    e = entry(name)
    assert e.cooperative and not e.turn_based and e.groups == {"agent": ["agent_0", "agent_1", "agent_2"]}
    assert e.episode_limit == 26
    with trust.reading("checkpoints/ckpt-000000001.h5"):  # a stored config naming it: built without --env-import
        cfg = from_dict({"env": {"name": name, "num_envs": 2}})
        venv = make_batched_env(cfg.env.name, 2, 0)
        assert isinstance(venv, jm.JaxMarlEnv)
        with pytest.raises(trust.NotAllowed):
            from_dict({"env": {"name": "foo:bar"}})
    assert not trust._ALLOWED
    with pytest.raises(EnvError, match="no PettingZoo object"):
        make_env(name)
    with pytest.raises(ConfigError, match="config key 'env.name'.*league mode"):
        from_dict({"env": {"name": name}, "algo": {"name": "ippo"},
                   "league": {"enabled": True, "groups": [{"name": "main"}]}})
    with pytest.raises(EnvError, match="expected jaxmarl:<environment>"):
        probe_spec("jaxmarl:")


def test_a_missing_jax_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "jaxmarl", None)
    with pytest.raises(EnvError, match=r'pip install -e "\.\[jax\]"'):
        jm.probe(MPE)


def test_the_mpe_port_is_pettingzoos_simple_spread_step_by_step():
    """JaxMARL's MPE_simple_spread_v3 with max_steps=24 is PettingZoo's simple_spread_v3 (max_cycles=25): from the
    same positions and with the same actions, every step's observations and rewards agree to float rounding and
    both episodes end after 25 steps (JaxMARL's default max_steps=25 plays one step more)."""
    import jax
    import jax.numpy as jnp
    from jaxmarl.environments.mpe.simple import State
    from mpe2 import simple_spread_v3

    pz = simple_spread_v3.parallel_env(N=3, local_ratio=0.5, max_cycles=25, continuous_actions=False)
    port = jm.make(MPE, {"max_steps": 24})
    rng = np.random.default_rng(0)
    for ep in range(5):
        obs, _ = pz.reset(seed=ep)
        ents = pz.unwrapped.world.agents + pz.unwrapped.world.landmarks
        st = State(p_pos=jnp.array(np.array([e.state.p_pos for e in ents]), dtype=jnp.float32),
                   p_vel=jnp.array(np.array([e.state.p_vel for e in ents]), dtype=jnp.float32),
                   c=jnp.zeros((3, 2)), done=jnp.array(False), step=jnp.array(0))
        for a in pz.agents:
            np.testing.assert_allclose(np.asarray(port.get_obs(st)[a]), obs[a], atol=1e-5)
        key, steps, ended = jax.random.PRNGKey(ep), 0, False
        while pz.agents:
            act = {a: int(rng.integers(5)) for a in pz.agents}
            obs, rew, _, _, _ = pz.step(act)
            key, k = jax.random.split(key)
            jobs, st, jrew, jdone, _ = port.step_env(k, st, {a: jnp.array(v) for a, v in act.items()})
            steps += 1
            for a in rew:
                np.testing.assert_allclose(np.asarray(jobs[a]), obs[a], atol=1e-5)
                assert abs(float(jrew[a]) - rew[a]) < 1e-5
            ended = bool(jdone["__all__"])
        assert steps == 25 and ended


def test_parts_take_disjoint_seeds_and_a_resume_must_keep_them():
    """env.parts: part k's j-th episode takes the stream's seed number j*K + k (no two copies share an episode seed);
    a checkpoint's seeds are restored only into the same number of copies and parts (a one-line error otherwise)."""
    two = jm.JaxMarlEnv(MPE, 4, 3, SHORT, parts=2)
    two.reset()
    assert [(sl.start, sl.stop) for sl in two.parts] == [(0, 2), (2, 4)]
    np.testing.assert_array_equal(two.episode_seeds, episode_seeds(3, 0, 8)[[0, 2, 1, 3]])
    play(two, 6)  # every copy ended one episode: the next seeds of each part's share of the stream
    np.testing.assert_array_equal(two.episode_seeds, episode_seeds(3, 0, 8)[[4, 6, 5, 7]])
    state = two.seeds_state()
    assert state.tolist()[4:] == [3, 4, 4]
    one = jm.JaxMarlEnv(MPE, 4, 3, SHORT)
    with pytest.raises(EnvError, match="resume with the checkpoint's env.num_envs and env.parts"):
        one.restore_seeds(state)
    with pytest.raises(EnvError, match="env.parts 3: must be >= 1 and divide env.num_envs 4"):
        jm.JaxMarlEnv(MPE, 4, 3, SHORT, parts=3)


@pytest.mark.parametrize("recurrent", [False, True])
def test_the_overlapped_collect_records_what_a_step_by_step_loop_does(recurrent):
    """Sampler.collect with env.parts=2 (part k's env step in flight while the policy acts for the other part)
    fills the record exactly as a plain loop that acts for and steps each part in turn, waiting for every step; a
    recurrent policy carries each part's rows of its hidden state."""
    import torch

    from hpcmarl.comm.spec import unroll_spec
    from hpcmarl.models import Inference
    from hpcmarl.sampler import Sampler

    E, T = 6, 7
    venv = jm.JaxMarlEnv(MPE, E, 1, SHORT, parts=2)
    policy = Inference(venv.spec, 16, 1, recurrent=recurrent)
    spec = unroll_spec(venv.spec, T, E, policy.policies["agent"].hidden_size if recurrent else 0, parts=2)
    sampler = Sampler(venv, policy, spec, T)
    torch.manual_seed(0)
    got = [sampler.collect(spec.alloc()) for _ in range(2)]

    ref_env = jm.JaxMarlEnv(MPE, E, 1, SHORT, parts=2)
    ref_env.reset()
    ref = Inference(venv.spec, 16, 1, recurrent=recurrent)
    ref.policies.load_state_dict(policy.policies.state_dict())
    torch.manual_seed(0)
    for rec in got:
        if recurrent:
            np.testing.assert_array_equal(rec["agent/h0"], ref.hidden("agent", (E, 3)).numpy())
        for t in range(T):
            for k, sl in enumerate(ref_env.parts):
                obs = ref_env.obs["agent"][sl].copy()
                np.testing.assert_array_equal(rec["agent/obs"][t, sl], obs)
                acts, logps = ref.act({"agent": obs}, {"agent": ref_env.action_mask["agent"][sl]}, rows=sl)
                ref_env.step_async(k, acts)
                rew, term, trunc, fin = ref_env.step_wait(k)
                ref.episodes_ended([ep.env for ep in fin])
                np.testing.assert_array_equal(rec["agent/action"][t, sl], acts["agent"])
                np.testing.assert_array_equal(rec["agent/logp"][t, sl], logps["agent"])
                np.testing.assert_array_equal(rec["agent/reward"][t, sl], rew["agent"])
                np.testing.assert_array_equal(rec["agent/truncated"][t, sl], trunc["agent"])
                np.testing.assert_array_equal(rec["env_done"][t, sl], [i in {ep.env for ep in fin}
                                                                       for i in range(sl.start, sl.stop)])
        np.testing.assert_array_equal(rec["agent/obs"][T], ref_env.obs["agent"])
        np.testing.assert_array_equal(rec["env_seeds"], ref_env.seeds_state())
    assert got[0]["episodes"][:, 1].max() == 6  # episodes of max_steps + 1 steps ended inside the unrolls
