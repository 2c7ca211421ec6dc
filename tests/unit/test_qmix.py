"""QMIX / VDN and the MAST components of the learner (no MPI)."""
import numpy as np
import pytest
import torch

from hpcmarl.algos.offpolicy import EpisodeReplay, EpisodeStitcher
from hpcmarl.algos.qmix import QInference, QMIXConfig, QMixer, QMIXLearner, lambda_returns, soft_mellowmax
from hpcmarl.comm.spec import unroll_spec
from hpcmarl.config import load_config
from hpcmarl.envs import VecEnv, probe_spec
from hpcmarl.sampler import Sampler


# ---- Soft Mellowmax ----------------------------------------------------------------------------------
def sm_reference(q, omega, alpha):
    """The defining form (1/omega) log sum_a softmax_alpha(q)_a exp(omega q_a), in float64 numpy."""
    q = np.asarray(q, np.float64)
    w = np.exp(alpha * (q - q.max()))
    w /= w.sum()
    return np.log((w * np.exp(omega * q)).sum()) / omega


def test_soft_mellowmax_matches_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=5)
        omega, alpha = rng.uniform(0.5, 5), rng.uniform(0, 3)
        got = soft_mellowmax(torch.tensor(q), omega, alpha).item()
        assert got == pytest.approx(sm_reference(q, omega, alpha), abs=1e-9)
        assert got <= q.max() + 1e-12


def test_soft_mellowmax_limits():
    q = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    big = soft_mellowmax(q, 1e4)
    np.testing.assert_allclose(big.numpy(), q.max(-1).values.numpy(), atol=1e-3)  # omega -> inf: max
    small = soft_mellowmax(q, 1e-6)
    np.testing.assert_allclose(small.numpy(), q.mean(-1).numpy(), atol=1e-5)  # omega -> 0 (alpha = 0): mean
    alpha = 2.0  # omega -> 0 with alpha > 0: the softmax_alpha-weighted mean
    w = torch.softmax(alpha * q, -1)
    np.testing.assert_allclose(soft_mellowmax(q, 1e-6, alpha).numpy(), (w * q).sum(-1).numpy(), atol=1e-5)


def test_soft_mellowmax_ignores_masked_actions_and_is_stable():
    q = torch.tensor([[5.0, 1.0, 2.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])
    got = soft_mellowmax(q, 10.0, 1.0, mask)
    want = soft_mellowmax(q[:, :3], 10.0, 1.0)
    assert got.item() == pytest.approx(want.item(), abs=1e-6) and got.item() < 5.0 + 1e-6
    huge = soft_mellowmax(torch.tensor([[1e4, -1e4, 3e3]]), 10.0, 5.0)
    assert torch.isfinite(huge).all() and huge.item() == pytest.approx(1e4, abs=1e-3)
    none = soft_mellowmax(q, 10.0, 0.0, torch.zeros_like(mask))  # no available action (dead agent): 0, not NaN
    assert none.item() == 0.0


# ---- TD(lambda) ----------------------------------------------------------------------------------------
def lambda_reference(r, term, valid, boot, gamma, lam):
    """G^lambda_t = (1 - lam) sum_{k<K} lam^{k-1} G^(k)_t + lam^{K-1} G^(K)_t with K the steps left in the
    segment; G^(k)_t = sum_{j<k} gamma^j r_{t+j} + gamma^k (1 - term_{t+k-1}) boot_{t+k-1}."""
    B, L = r.shape
    out = np.zeros((B, L))
    for b in range(B):
        last = int(valid[b].sum()) - 1
        for t in range(last + 1):
            K = last - t + 1
            ks = []
            for k in range(1, K + 1):
                g = sum(gamma ** j * r[b, t + j] for j in range(k))
                g += gamma ** k * (1 - term[b, t + k - 1]) * boot[b, t + k - 1]
                ks.append(g)
            out[b, t] = (1 - lam) * sum(lam ** (k - 1) * ks[k - 1] for k in range(1, K)) + lam ** (K - 1) * ks[K - 1]
    return out


@pytest.mark.parametrize("lam", [0.0, 0.6, 1.0])
def test_lambda_returns_match_the_nested_sum(lam):
    rng = np.random.default_rng(1)
    B, L, gamma = 6, 9, 0.9
    lengths = np.array([9, 4, 1, 7, 9, 3])
    valid = (np.arange(L)[None] < lengths[:, None]).astype(np.float64)
    term = np.zeros((B, L))
    for b, ln in enumerate(lengths):
        if b % 2 == 0:  # even rows end with their episode; odd rows are cut segments (bootstrap at the end)
            term[b, ln - 1] = 1
    r = rng.normal(size=(B, L)) * valid
    boot = rng.normal(size=(B, L))
    got = lambda_returns(*(torch.tensor(x) for x in (r, term, valid, boot)), gamma, lam).numpy()
    want = lambda_reference(r, term, valid, boot, gamma, lam)
    np.testing.assert_allclose(got, want * valid, atol=1e-10)
    assert np.all(got[valid == 0] == 0)
    if lam == 0.0:  # one-step targets
        np.testing.assert_allclose(got, (r + gamma * (1 - term) * boot) * valid, atol=1e-12)


# ---- mixer ----------------------------------------------------------------------------------------------
def test_qmix_mixer_is_monotonic_in_every_utility():
    torch.manual_seed(0)
    mixer = QMixer(state_dim=7, n_agents=4, embed=8, hyper_hidden=16)
    qs = torch.randn(256, 4, requires_grad=True) * 5
    s = torch.randn(256, 7) * 3
    q_tot = mixer(qs, s)
    (grad,) = torch.autograd.grad(q_tot.sum(), qs)
    assert grad.shape == (256, 4) and (grad >= 0).all() and (grad > 0).any()


# ---- episodes ---------------------------------------------------------------------------------------------
def unrolls_of(env, kwargs, T, E, n_unrolls, seed=0, epsilon=1.0):
    """The spec and a generator of unrolls collected into ONE record buffer (as a learner's receive buffer)."""
    spec = probe_spec(env, kwargs)
    venv = VecEnv(env, E, seed, kwargs)
    pol = QInference(spec, 8, 1)
    pol.epsilon = epsilon
    sampler = Sampler(venv, pol, unroll_spec(spec, T, E), T)
    rec = sampler.spec.alloc()
    return spec, (sampler.collect(rec) for _ in range(n_unrolls))


def test_stitcher_rebuilds_whole_episodes_across_unroll_boundaries():
    """counting_v0 (observation = step index): 7-step episodes cut into 5-step unrolls come back whole,
    in order, with the team reward and a terminal flag on the last step only."""
    spec, recs = unrolls_of("counting_v0", {"max_cycles": 7, "die_at": 4}, T=5, E=3, n_unrolls=6)
    st = EpisodeStitcher(spec, max_len=20)
    eps = [ep for r in recs for ep in st.add(r, actor=0)]
    assert len(eps) == 3 * 4  # 30 steps per env copy = 4 whole episodes + 2 steps in flight
    for ep in eps:
        np.testing.assert_array_equal(ep["agent/obs"][:7, 0, 0], np.arange(7))
        assert ep["agent/obs"].shape[0] == 8 and ep["agent/action"].shape[0] == 7
        assert ep["terminal"].tolist() == [0] * 6 + [1]
        # agent_1 dies at step 4: it gets no reward from then on, agent_0 gets 1 per step
        np.testing.assert_array_equal(ep["reward"], [2, 2, 2, 2, 1, 1, 1])
        np.testing.assert_array_equal(ep["agent/alive"][:7, 1], [1, 1, 1, 1, 0, 0, 0])


def test_stitcher_bootstraps_truncated_episodes_from_their_final_observation():
    """The same 7-step episodes end by truncation (agent_1 terminated earlier, at step 4): with bootstrap_truncated
    the segment is not terminal and its bootstrap row is the final observation (step index 7) of the agent the time
    limit truncated; the next episode's first observation (step 0) is not used."""
    spec, recs = unrolls_of("counting_v0", {"max_cycles": 7, "die_at": 4}, T=5, E=2, n_unrolls=3)
    st = EpisodeStitcher(spec, max_len=20, bootstrap_truncated=True)
    eps = [ep for r in recs for ep in st.add(r, actor=0)]
    assert len(eps) == 2 * 2
    for ep in eps:
        assert ep["terminal"].tolist() == [0] * 7
        assert ep["agent/obs"][7, 0, 0] == 7 and ep["agent/alive"][7].tolist() == [1, 0]


def test_stitcher_cuts_long_episodes_and_keeps_the_next_observation():
    """7-step episodes, 5-step unrolls, segments of at most 3 steps: 3 + 3 + 1 per episode; a cut segment
    keeps the observation after it (its bootstrap row) and is not terminal."""
    spec, recs = unrolls_of("counting_v0", {"max_cycles": 7}, T=5, E=1, n_unrolls=3)
    st = EpisodeStitcher(spec, max_len=3)
    eps = [ep for r in recs for ep in st.add(r, actor=1)]
    steps = [ep["agent/obs"][:, 0, 0].tolist() for ep in eps]
    assert steps == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 0], [0, 1, 2, 3], [3, 4, 5, 6], [6, 0]]
    assert [ep["terminal"].tolist() for ep in eps] == [[0, 0, 0], [0, 0, 0], [1]] * 2


def test_replay_is_fifo_and_draws_the_recent_share_from_the_newest():
    spec = probe_spec("counting_v0", {"max_cycles": 4})
    rb = EpisodeReplay(spec, capacity=10, max_len=4)
    for i in range(25):
        L = 1 + i % 4
        rb.add({"reward": np.full(L, i, np.float32), "agent/obs": np.full((L + 1, 2, 2), i, np.float32)})
    assert rb.size == 10 and rb.added == 25
    assert sorted(rb.data["reward"][:, 0].tolist()) == list(range(15, 25))  # the oldest were overwritten
    rng = np.random.default_rng(0)
    idx = rb.sample(1000, rng, recent=3, recent_fraction=0.4)
    ids = rb.data["reward"][idx, 0]
    assert np.all(ids[:400] >= 22) and set(ids[:400].tolist()) == {22, 23, 24}
    assert set(ids[400:].tolist()) == set(range(15, 25))
    b = rb.batch(np.array([0, 1]), "cpu")
    L = int(rb.length[[0, 1]].max())
    assert b["reward"].shape == (2, L) and b["agent/obs"].shape == (2, L + 1, 2, 2)
    np.testing.assert_array_equal(b["valid"].sum(1).numpy(), rb.length[[0, 1]])


def test_replay_refuses_a_buffer_larger_than_half_the_memory():
    spec = probe_spec("counting_v0", {"max_cycles": 4})
    rb = EpisodeReplay(spec, capacity=10 ** 9, max_len=1000)
    with pytest.raises(MemoryError, match="algo.buffer_episodes"):
        rb.add({"reward": np.zeros(3, np.float32), "agent/obs": np.zeros((4, 2, 2), np.float32)})


def test_epsilon_greedy_respects_action_masks():
    spec = probe_spec("matrix_v0", {"masked": True})
    pol = QInference(spec, 8, 1)
    obs = {"agent": np.tile(np.array([[0.0, 0.0], [0.0, 1.0]], np.float32), (500, 1, 1))}
    mask = np.ones((500, 2, 3), bool)
    mask[:, 1, 0] = False
    for eps in (0.0, 0.5, 1.0):
        pol.epsilon = eps
        a, logp = pol.act(obs, {"agent": mask})
        assert not np.any(a["agent"][:, 1] == 0)  # never the unavailable action
        assert np.all(logp["agent"] <= 0) and np.all(np.isfinite(logp["agent"]))
    pol.epsilon = 1.0
    a, _ = pol.act(obs, {"agent": mask})
    counts = np.bincount(a["agent"][:, 0], minlength=3)
    assert counts.min() > 100  # uniform over the 3 available actions of agent_0
    pol.epsilon = 0.0
    a, logp = pol.act(obs, {"agent": mask})
    assert len(set(a["agent"][:, 0].tolist())) == 1 and np.allclose(logp["agent"], 0.0)


# ---- learner ----------------------------------------------------------------------------------------------
def make_cfg(**kw):
    # the matrix game's 3-step limit is part of its task (the observation holds t / max_cycles): no bootstrap there
    base = {"name": "qmix", "hidden": 32, "layers": 2, "batch_episodes": 16, "learning_starts": 16, "unroll_length": 3,
            "eps_anneal_steps": 3000, "eps_end": 0.05, "train_steps": 2, "target_update": 20, "lr": 3e-3,
            "bootstrap_truncated": "false"}
    base.update(kw)
    return load_config(None, ["env.name=matrix_v0", "env.num_envs=8"] + [f"algo.{k}={v}" for k, v in base.items()]).algo


def train_matrix(cfg, updates, masked=False, seed=0, device="cpu"):
    """In-process learner (on ``device``) + sampler on the matrix game; returns (learner, update stats, the greedy
    policy's team return over one episode: 3.0 = the best joint action at every step)."""
    kwargs = {"masked": masked}
    spec = probe_spec("matrix_v0", kwargs)
    venv = VecEnv("matrix_v0", 8, seed, kwargs)
    pol = QInference(spec, cfg.hidden, cfg.layers, cfg.recurrent)
    sampler = Sampler(venv, pol, unroll_spec(spec, cfg.unroll_length, 8, cfg.hidden if cfg.recurrent else 0),
                      cfg.unroll_length)
    learner = QMIXLearner(spec, cfg, torch.device(device), seed)
    rec = sampler.spec.alloc()
    steps = 0
    stats = []
    def give_weights(v):  # what the learner's actor link does: masks when they changed, then the values
        if learner.mask_version is not None and learner.mask_version != pol.mask_version:
            pol.set_masks(learner.policy_masks(), learner.mask_version)
        pol.load(learner.policy_flat(), v)

    for v in range(updates):
        give_weights(v)
        pol.epsilon = learner.exploration(steps)
        sampler.collect(rec)
        steps += int(rec["meta"][3])
        stats.append(learner.update([rec], env_steps=steps))
    give_weights(updates)
    ev = VecEnv("matrix_v0", 1, seed + 1, kwargs)  # one greedy episode
    ev.reset()
    pol.h, pol.last = {}, {}  # (recurrent) a new episode in a new env
    ret = 0.0
    for _ in range(3):
        a, _ = pol.act(ev.obs, ev.action_mask, greedy=True)
        rew, _, _, _ = ev.step(a)
        ret += float(rew["agent"].sum())
    return learner, stats, ret


@pytest.mark.parametrize("name", ["qmix", "vdn"])
def test_qmix_and_vdn_learn_the_matrix_game(name):
    """Real training: both find the best joint action (2, 2) of the cooperative matrix game."""
    torch.set_num_threads(1)
    learner, stats, ret = train_matrix(make_cfg(name=name), 150)
    assert ret == pytest.approx(3.0)  # random play: 0.19 per step on average
    assert stats[-1]["q_taken"] > 1.0 and stats[0]["train_steps"] == 0 < stats[-1]["train_steps"]


@pytest.mark.parametrize("soft", [False, True])
def test_mast_learns_with_masks_and_keeps_sparsity(soft):
    """MAST at 80% sparsity (RigL updates, Soft Mellowmax, TD(lambda), dual replay) with action masks:
    learns the optimum; sparsity and the per-layer active counts never change; masked weights are exactly
    zero in the network, its target (hard copies, or soft updates with standardised rewards) and Adam's moments."""
    torch.set_num_threads(1)
    cfg = make_cfg(name="qmix", sparsity=0.8, topology_every=10, topology_end=250, drop_fraction=0.3,
                   mellowmax_omega=10, td_lambda=0.6, td_lambda_after=600, recent_episodes=32, recent_fraction=0.5,
                   hidden=64, **({"target_tau": 0.05, "reward_norm": True} if soft else {}))
    learner, stats, ret = train_matrix(cfg, 160, masked=True)
    assert ret == pytest.approx(3.0)
    m = learner.masks
    assert sum(s["topology/grown"] for s in stats) > 0
    assert all(s["sparsity"] == pytest.approx(stats[0]["sparsity"]) for s in stats)
    assert stats[-1]["td_lambda"] == 0.6 and stats[0]["td_lambda"] == 0.0
    params = dict(learner.net.named_parameters())
    target = dict(learner.target.named_parameters())
    for name, mask in m.masks.items():
        assert torch.all(params[name][~mask] == 0) and torch.all(target[name][~mask] == 0)
        st = learner.opt.state[params[name]]
        assert torch.all(st["exp_avg"][~mask] == 0) and torch.all(st["exp_avg_sq"][~mask] == 0)


def test_flops_count_active_weights_only():
    torch.set_num_threads(1)
    dense, _, _ = train_matrix(make_cfg(), 20)
    sparse, _, _ = train_matrix(make_cfg(sparsity=0.9, topology_every=0), 20)
    ratio_inf = sparse.inference_flops() / dense.inference_flops()
    ratio_train = sparse.flops["train"] / dense.flops["train"]
    assert 0.05 < ratio_inf < 0.4 and 0.05 < ratio_train < 0.4
    assert dense.flops["dense_grad"] == 0 == sparse.flops["dense_grad"]


def test_learner_checkpoint_round_trip_keeps_masks_and_zeros():
    torch.set_num_threads(1)
    cfg = make_cfg(sparsity=0.9, topology_every=5, topology_end=1000)
    learner, _, _ = train_matrix(cfg, 30)
    arrays = learner.state_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    spec = probe_spec("matrix_v0", {"masked": False})
    other = QMIXLearner(spec, cfg, torch.device("cpu"), seed=99)
    other.load_state_arrays(arrays)
    for name, mask in learner.masks.masks.items():
        assert torch.equal(other.masks.masks[name], mask)
    for a, b in zip(learner.params, other.params):
        assert torch.equal(a, b)
    for name, mask in other.masks.masks.items():
        assert torch.all(dict(other.target.named_parameters())[name][~mask] == 0)
    assert other.steps == learner.steps and other.flops == learner.flops


def test_config_checks():
    assert isinstance(load_config(None, ["algo.name=vdn"]).algo, QMIXConfig)
    assert load_config(None, ["algo.name=qmix"]).algo.episode_limit == 25  # simple_spread's max_cycles
    from hpcmarl.config import ConfigError

    for bad, key in ((["algo.sparsity=1.0"], "algo.sparsity"),
                     (["algo.eps_end=0.5", "algo.eps_start=0.1"], "algo.eps_start"),
                     (["env.name=counting_v0"], "algo.episode_limit"), (["algo.td_lambda=2"], "algo.td_lambda"),
                     (["algo.reward_center=false"], "algo.reward_center")):
        with pytest.raises(ConfigError, match=key):
            load_config(None, ["algo.name=qmix"] + bad)
    with pytest.raises(ValueError, match="discrete"):
        QMIXLearner(probe_spec("target_v0"), make_cfg(), torch.device("cpu"), 0)


def test_actors_get_active_values_and_masks_only_when_they_change():
    """Sparse weights to actors: the message holds the active values (about 1 - sparsity of the dense size,
    the same count after topology updates); with the masks the actor rebuilds the learner's utility nets exactly."""
    torch.set_num_threads(1)
    learner, _, _ = train_matrix(make_cfg(sparsity=0.9, topology_every=5, topology_end=1000, hidden=64), 40)
    spec = probe_spec("matrix_v0", {"masked": False})
    dense_size = sum(p.numel() for p in learner.net.policies.parameters())
    flat = learner.policy_flat()
    assert flat.size < 0.35 * dense_size and learner.mask_version > 0
    pol = QInference(spec, 64, 2)
    pol.set_masks(learner.policy_masks(), learner.mask_version)
    assert learner.policy_masks().nbytes == pol.mask_bytes()
    pol.load(flat, 7)
    for a, b in zip(pol.policies.parameters(), learner.net.policies.parameters()):
        assert torch.equal(a, b.detach())
    # a topology update keeps the message size
    before = learner.mask_version
    for _ in range(12):
        learner.update([], env_steps=10_000)
    assert learner.mask_version > before and learner.policy_flat().size == flat.size


# ---- recurrent agents (PyMARL's RNN agent) ---------------------------------------------------------------
def test_recurrent_qmix_learns_the_matrix_game():
    torch.set_num_threads(1)
    learner, stats, ret = train_matrix(make_cfg(name="qmix", recurrent=True), 150)
    assert ret == pytest.approx(3.0)
    assert any(n.startswith("policies.agent.rnn.") for n, _ in learner.net.named_parameters())


def test_recurrent_agents_replay_the_actor_from_episode_starts():
    """Greedy actors with a hidden state and last-action input; the learner's utilities over the stitched episodes
    (GRU from zero at the episode's start, last actions from the episode) pick the same actions at every step."""
    cfg = make_cfg(recurrent=True, unroll_length=5)
    kwargs = {"n_agents": 2, "max_cycles": 7}
    spec = probe_spec("counting_v0", kwargs)
    learner = QMIXLearner(spec, cfg, torch.device("cpu"), 0)
    venv = VecEnv("counting_v0", 3, 1, kwargs)
    pol = QInference(spec, cfg.hidden, cfg.layers, True)
    pol.load(learner.policy_flat(), 0)
    pol.epsilon = 0.0
    sampler = Sampler(venv, pol, unroll_spec(spec, 5, 3, cfg.hidden), 5)
    stitcher = EpisodeStitcher(spec, 7, True)
    eps = [ep for _ in range(4) for ep in stitcher.add(sampler.collect(sampler.spec.alloc()), 0)]
    assert len(eps) == 6 and all(len(ep["reward"]) == 7 for ep in eps)
    with torch.no_grad():
        q = learner.net.utilities({"agent": torch.from_numpy(np.stack([ep["agent/obs"] for ep in eps]))},
                                  {"agent": torch.from_numpy(np.stack([ep["agent/action"] for ep in eps]))})["agent"]
    acts = torch.from_numpy(np.stack([ep["agent/action"] for ep in eps]))
    mask = torch.from_numpy(np.stack([ep["agent/action_mask"] for ep in eps])).bool()
    np.testing.assert_array_equal(q[:, :-1].masked_fill(~mask[:, :-1], float("-inf")).argmax(-1), acts)
    # without the hidden state (every step from zero) the choices differ somewhere: the GRU carries information
    flat = learner.net.policies["agent"]
    from hpcmarl.algos.qmix import rnn_input
    with torch.no_grad():
        o = torch.from_numpy(np.stack([ep["agent/obs"] for ep in eps]))[:, :-1]
        last = torch.nn.functional.one_hot(torch.cat([torch.zeros_like(acts[:, :1]), acts[:, :-1]], 1),
                                           spec.groups[0].n_actions).float()
        q0, _ = flat(rnn_input(o, last), torch.zeros(*o.shape[:-1], cfg.hidden))
    assert not torch.allclose(q0, q[:, :-1], atol=1e-5)


def random_episodes(spec, lengths, rng):
    """Episodes of the given lengths in the replay's layout (obs, alive and masks one row longer), random values."""
    g = spec.groups[0]
    eps = []
    for L in lengths:
        mask = rng.random((L + 1, g.n, g.n_actions)) < 0.7
        mask[..., 0] = True
        eps.append({f"{g.name}/obs": rng.normal(size=(L + 1, g.n, g.obs_dim)).astype(np.float32),
                    f"{g.name}/action": rng.integers(0, g.n_actions, (L, g.n)).astype(np.int64),
                    f"{g.name}/alive": (rng.random((L + 1, g.n)) < 0.9).astype(np.float32),
                    f"{g.name}/action_mask": mask, "reward": rng.normal(size=L).astype(np.float32),
                    "terminal": np.eye(1, L, L - 1, dtype=np.float32)[0] * float(L % 2)})
    return eps


def mixed_replay(spec):
    """(a replay, the random episodes of 7 lengths up to 12 steps it holds): the same ones on every call."""
    eps = random_episodes(spec, [3, 12, 1, 7, 12, 5, 9], np.random.default_rng(0))
    replay = EpisodeReplay(spec, 16, 12)
    for ep in eps:
        replay.add(ep)
    return replay, eps


def loss_and_grad(learner, batch, lam=0.6):
    """The learner's TD loss on ``batch`` and its gradient over every parameter, flat."""
    learner.net.zero_grad()
    loss, _ = learner.loss(batch, lam)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.reshape(-1) for p in learner.net.parameters()])


@pytest.mark.parametrize("mellowmax", [0, 10])
def test_recurrent_loss_on_mixed_lengths_is_the_loss_of_each_episode_alone(mellowmax):
    """The learner steps the GRU through running episodes only and mixes real steps only: a batch of episodes of
    7 different lengths (padding filled with garbage) gives the loss and the gradient of the episodes one at a
    time, each unpadded, weighted by its steps; the padded rows' utilities are 0, the real ones those of a loop
    over every row."""
    torch.set_num_threads(1)
    spec = probe_spec("matrix_v0", {"masked": True})
    cfg = make_cfg(recurrent=True, episode_limit=12, mellowmax_omega=mellowmax, td_lambda=0.6, td_lambda_after=0)
    learner = QMIXLearner(spec, cfg, torch.device("cpu"), 0)
    replay, eps = mixed_replay(spec)
    b = replay.batch(np.arange(len(eps)), "cpu")
    for k, v in b.items():  # garbage in the padding: it must not reach any real row
        if k.endswith("/obs"):
            b[k] = torch.where(v == 0, torch.full_like(v, 3.0), v)
    lengths = b["valid"].sum(1).long()
    with torch.no_grad():
        packed = learner.net.utilities({"agent": b["agent/obs"]}, {"agent": b["agent/action"]}, lengths)["agent"]
        every = learner.net.utilities({"agent": b["agent/obs"]}, {"agent": b["agent/action"]})["agent"]
    real = torch.arange(13)[None, :] <= lengths[:, None]
    torch.testing.assert_close(packed[real], every[real], rtol=1e-5, atol=1e-6)
    assert torch.all(packed[~real] == 0) and torch.any(every[~real] != 0)

    loss, grad = loss_and_grad(learner, b)
    alone = [loss_and_grad(learner, replay.batch(np.array([i]), "cpu")) for i in range(len(eps))]
    w = torch.tensor([len(ep["reward"]) for ep in eps], dtype=torch.float32) / sum(len(ep["reward"]) for ep in eps)
    torch.testing.assert_close(loss, sum(wi * l for wi, (l, _) in zip(w, alone)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, sum(wi * g for wi, (_, g) in zip(w, alone)), rtol=1e-4, atol=1e-6)


def test_mast_sparsifies_the_gru_and_counts_its_flops():
    torch.set_num_threads(1)
    dense, _, _ = train_matrix(make_cfg(recurrent=True), 20)
    sparse, stats, _ = train_matrix(make_cfg(recurrent=True, sparsity=0.9, topology_every=5, topology_end=1000), 20)
    assert {"policies.agent.rnn.weight_ih", "policies.agent.rnn.weight_hh"} <= set(sparse.masks.masks)
    gru = dict(sparse.net.named_parameters())["policies.agent.rnn.weight_hh"]
    assert 0 < float((gru != 0).float().mean()) < 0.5
    names = [n for n, *_ in dense.linears]
    assert "policies.agent.rnn.weight_ih" in names and "policies.agent.rnn.weight_hh" in names
    assert 0.05 < sparse.inference_flops() / dense.inference_flops() < 0.4
    assert all(s["sparsity"] == pytest.approx(stats[0]["sparsity"]) for s in stats)


def test_reward_standardisation_keeps_sparse_rewards_large():
    """QMIX standardises team rewards with a std floor of 0.01 (value targets keep 0.1): a rare reward of 0.5 among
    zeros (std ~0.02, as on LBF) becomes ~25, not 5 as under the value-target floor."""
    from hpcmarl.algos.normalize import ValueNorm

    r = torch.zeros(2000)
    r[::500] = 0.5  # 4 rewards in 2000 steps
    sparse, value = ValueNorm(min_var=1e-4), ValueNorm()
    for norm in (sparse, value):
        norm.update(r, torch.ones_like(r))
    assert sparse.stats()[1] == pytest.approx(float(r.std(unbiased=False)), rel=1e-3)
    assert float(sparse.normalize(torch.tensor(0.5))) > 15
    assert float(value.normalize(torch.tensor(0.5))) < 5.1
    assert ValueNorm(min_var=1e-4).stats()[1] == pytest.approx(0.01)  # before any reward: the floor caps the scale


@pytest.mark.parametrize("center", [True, False])
def test_reward_norm_without_centring_only_scales_rewards(center, monkeypatch):
    """algo.reward_center=false: the TD targets see the team rewards divided by the running std, not shifted by the
    mean (the matrix game's rewards are >= 0 with zeros among them: centred, the zeros turn negative)."""
    from hpcmarl.algos.qmix import learning

    seen = []
    def spy(rewards, *args):
        seen.append(rewards.clone())
        return lambda_returns(rewards, *args)
    monkeypatch.setattr(learning, "lambda_returns", spy)
    torch.set_num_threads(1)
    learner, _, _ = train_matrix(make_cfg(reward_norm=True, reward_center=center), 12)
    mean, std = learner.reward_norm.stats()  # the statistics of the last update, which made the last batch
    assert mean > 0.05 and std > 0.05
    r = seen[-1]
    if center:
        assert float(r.min()) == pytest.approx(-mean / std, rel=1e-5)
    else:
        values = torch.unique(torch.round(r.double() * std, decimals=4))
        assert set(values.tolist()) <= {0.0, 0.2, 0.5, 1.0} and len(values) >= 2  # the payoffs, unshifted
