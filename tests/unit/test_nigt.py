"""NIGT with Rennala / Malenia / synchronous aggregation against slow references (no MPI)."""
import heapq

import numpy as np
import pytest
import torch

from hpcmarl.algos.nigt import (
    NIGT,
    Aggregator,
    LocalGate,
    Round,
    discounted_reward_to_go,
    gaussian_target_grad,
    malenia_closed,
    simulate,
    trajectory_gradients,
)
from hpcmarl.envs import probe_spec
from hpcmarl.models import GroupPolicy, squash

GAMMA = 0.9


# ---- the estimator g_H(tau, x) -------------------------------------------------------------------
def random_traj(spec, T, E, seed):
    rng = np.random.default_rng(seed)
    traj = {}
    for g in spec.groups:
        traj[f"{g.name}/obs"] = torch.tensor(rng.normal(size=(T, E, g.n, g.obs_dim)), dtype=torch.float32)
        if g.discrete:
            traj[f"{g.name}/action"] = torch.tensor(rng.integers(0, g.n_actions, (T, E, g.n)))
        else:
            traj[f"{g.name}/action"] = torch.tensor(rng.normal(size=(T, E, g.n, g.act_dim)), dtype=torch.float32)
        traj[f"{g.name}/reward"] = torch.tensor(rng.normal(size=(T, E, g.n)), dtype=torch.float32)
        valid = rng.random((T, E, g.n)) > 0.2
        traj[f"{g.name}/valid"] = torch.tensor(valid)
        traj[f"{g.name}/action_mask"] = torch.ones((T, E, g.n, g.mask_dim), dtype=torch.bool)
    return traj


def slow_gradient(policies, spec, traj, e, gamma):
    """sum_t (sum_{h>=t} gamma^h r_h) grad log pi(a_t|o_t), one agent and one step at a time."""
    params = list(policies.parameters())
    total = [torch.zeros_like(p) for p in params]
    for g in spec.groups:
        T = traj[f"{g.name}/obs"].shape[0]
        for j in range(g.n):
            for t in range(T):
                if not traj[f"{g.name}/valid"][t, e, j]:
                    continue
                G = sum(gamma ** h * float(traj[f"{g.name}/reward"][h, e, j])
                        for h in range(t, T) if traj[f"{g.name}/valid"][h, e, j])
                d = policies[g.name].dist(traj[f"{g.name}/obs"][t, e, j])
                logp = d.log_prob(traj[f"{g.name}/action"][t, e, j])
                grads = torch.autograd.grad(logp, params, allow_unused=True)
                for acc, gr in zip(total, grads):
                    if gr is not None:
                        acc += G * gr
    return torch.cat([x.reshape(-1) for x in total]).numpy()


@pytest.mark.parametrize("env,std", [("counting_v0", "log"), ("target_v0", "softplus")])
def test_trajectory_gradient_matches_slow_loop(env, std):
    spec = probe_spec(env, {"n_agents": 2})
    torch.manual_seed(0)
    policies = torch.nn.ModuleDict({g.name: GroupPolicy(g, 8, 2, std=std) for g in spec.groups})
    traj = random_traj(spec, T=6, E=3, seed=1)
    fast = trajectory_gradients(policies, spec, traj, GAMMA)
    assert fast.shape == (3, sum(p.numel() for p in policies.parameters()))
    for e in range(3):
        np.testing.assert_allclose(fast[e], slow_gradient(policies, spec, traj, e, GAMMA), rtol=2e-4, atol=2e-5)


def test_discount_counts_from_the_episode_start():
    r = torch.tensor([[1.0], [2.0], [4.0]])
    G = discounted_reward_to_go(r, 0.5)
    # G_1 = 0.5 * 2 + 0.25 * 4 (gamma^h, not gamma^(h - t))
    np.testing.assert_allclose(G[:, 0].numpy(), [1 + 1 + 1, 1 + 1, 1.0])


def test_softplus_std_stays_valid_and_squash_stays_in_the_box():
    spec = probe_spec("target_v0")
    g = spec.groups[0]
    pol = GroupPolicy(g, 8, 1, std="softplus", init_std=0.6)
    assert abs(float(pol.std().detach()[0]) - 0.6) < 1e-3
    with torch.no_grad():
        pol.std_raw.fill_(-50.0)  # far out, as an extrapolated query point may be
    assert float(pol.std().detach()[0]) > 0
    u = np.array([[-30.0], [0.0], [30.0]], np.float32)
    a = squash(g, u)
    assert a.min() >= -2.0 and a.max() <= 2.0 and abs(float(a[1, 0])) < 1e-6


# ---- NIGT -------------------------------------------------------------------------------------------
def test_nigt_step_has_length_alpha_and_uses_the_extrapolated_point():
    rng = np.random.default_rng(0)
    nigt = NIGT(rng.normal(size=7), lr=0.03, momentum=0.1)
    assert np.array_equal(nigt.query_point(), nigt.theta)  # round 0 queries theta_0
    d_prev = None
    for t in range(20):
        before, prev = nigt.theta.copy(), nigt.prev.copy()
        x = nigt.query_point()
        if t > 0:
            np.testing.assert_allclose(x, before + 9.0 * (before - prev))  # (1 - eta) / eta = 9
        g = rng.normal(size=7) * 10 ** rng.uniform(-3, 3)
        nigt.step(g)
        d = g if t == 0 else 0.9 * d_prev + 0.1 * g
        np.testing.assert_allclose(nigt.d, d)
        assert abs(np.linalg.norm(nigt.theta - before) - 0.03) < 1e-12  # exactly alpha, any gradient scale
        np.testing.assert_allclose(nigt.theta, before + 0.03 * d / np.linalg.norm(d))  # global norm
        np.testing.assert_array_equal(nigt.prev, before)
        d_prev = d


def test_nigt_state_round_trip():
    a = NIGT(np.arange(4.0), 0.1, 0.5)
    a.step(np.ones(4))
    a.step(np.array([1.0, -1, 0, 2]))
    b = NIGT(np.zeros(4), 0.1, 0.5)
    b.load_state_arrays(a.state_arrays())
    np.testing.assert_array_equal(a.query_point(), b.query_point())
    a.step(np.ones(4))
    b.step(np.ones(4))
    np.testing.assert_array_equal(a.theta, b.theta)


# ---- aggregation rules ----------------------------------------------------------------------------
def test_malenia_rule():
    assert not malenia_closed([5, 0], 4)  # every worker must contribute
    assert malenia_closed([2, 2], 4)  # harmonic mean 2 = M / n
    assert not malenia_closed([20, 1], 4)  # harmonic mean 1.9 < 2
    assert malenia_closed([1, 1, 1], 3)
    from hpcmarl.algos import aggregation

    assert aggregation.get("allreduce").quota(10, 4) == 3 and aggregation.get("rennala").quota(10, 4) == 0


def test_malenia_weights_each_actor_one_over_n_and_rennala_pools():
    grads = {0: [np.array([1.0])] * 9, 1: [np.array([4.0])]}
    for kind, expect in (("malenia", (1.0 + 4.0) / 2), ("rennala", (9 * 1.0 + 4.0) / 10)):
        agg = Aggregator(kind, 2, 1)
        for a, gs in grads.items():
            for g in gs:
                agg.add(a, g)
        assert agg.combine(agg.local_sum(), agg.counts)[0] == pytest.approx(expect)


def test_malenia_split_across_learners_equals_one_learner():
    """Two learners each holding one actor's sums and an all-reduce (a sum) give the same g."""
    rng = np.random.default_rng(3)
    grads = [(a, rng.normal(size=5)) for a in rng.integers(0, 3, 30)]
    one = Aggregator("malenia", 3, 5)
    parts = [Aggregator("malenia", 3, 5) for _ in range(2)]
    for a, g in grads:
        one.add(int(a), g)
        parts[int(a) % 2].add(int(a), g)
    total = parts[0].local_sum() + parts[1].local_sum()
    counts = parts[0].counts + parts[1].counts
    np.testing.assert_allclose(parts[0].combine(total, counts), one.combine(one.local_sum(), one.counts))


def test_a_registered_rule_serves_the_config_the_round_and_the_simulator(monkeypatch):
    """A plug-in's rule (docs/extending/aggregation.md: the fastest M, at most ceil(2M / n) from any one actor) is
    accepted by algo.aggregation, closes rounds and caps actors through its own methods."""
    from hpcmarl.algos import aggregation
    from hpcmarl.config import ConfigError, load_config

    monkeypatch.setattr(aggregation, "RULES", dict(aggregation.RULES))

    class Capped(aggregation.Rule):
        name = "capped"

        def quota(self, M, n):
            return -(-2 * M // n)

        def closed(self, counts, M, n):
            return int(np.sum(counts)) >= M

    with pytest.raises(ConfigError, match="must be one of rennala, malenia, allreduce"):
        load_config(None, ["algo.name=nigt", "algo.aggregation=capped"])
    aggregation.register_rule(Capped())
    assert load_config(None, ["algo.name=nigt", "algo.aggregation=capped"]).algo.aggregation == "capped"
    gate = LocalGate("capped", 2, [0, 1])
    gate.begin(4)
    assert [gate.offer(0) for _ in range(5)] == [True] * 4 + [False]  # the fast actor stops at 2M/n = 4 ...
    gate.begin(6)
    assert [gate.offer(0) for _ in range(6)] == [True] * 6 and gate.closed()  # ... of a round of M = 6
    out = simulate("capped", np.zeros(1), gaussian_target_grad([1.0, 1.0]), [1.0, 10.0], rounds=5, M=8)
    assert out["accepted"][0] == 5 * 8  # the slow actor never finishes one in time: the fast one gives all 8
    out = simulate("capped", np.zeros(1), gaussian_target_grad([1.0, 1.0]), [1.0, 3.0], rounds=5, M=8)
    assert out["accepted"].sum() == 40 and out["accepted"][1] > 0
    with pytest.raises(ValueError, match="already registered"):
        aggregation.register_rule(type("Other", (Capped,), {})())
    with pytest.raises(ValueError, match="unknown aggregation rule 'nope'"):
        aggregation.get("nope")


def test_round_drops_stale_and_late_gradients():
    rnd = Round("rennala", 2, 1, LocalGate("rennala", 2, [0, 1]))
    rnd.begin(5, 2)
    assert not rnd.offer(4, 0, np.array([100.0]))  # computed for round 4: dropped, never applied
    assert rnd.offer(5, 1, np.array([1.0]))
    assert rnd.offer(5, 0, np.array([3.0]))
    assert rnd.closed()
    assert not rnd.offer(5, 1, np.array([100.0]))  # round already has its M
    assert rnd.agg.combine(rnd.agg.local_sum(), rnd.agg.counts)[0] == pytest.approx(2.0)
    assert rnd.dropped.tolist() == [1, 1]


# ---- against a slow event-queue reference ------------------------------------------------------------
def reference_run(kind, theta0, grad_fn, times, rounds, M, lr, eta, seed):
    """docs/algorithms/nigt.md#update-rule written out directly: an event heap of workers, restart at every new
    point."""
    rng = np.random.default_rng(seed)
    n = len(times)
    theta = np.array(theta0, float)
    theta_prev = theta.copy()
    d = None
    now = 0.0
    per_round = []
    for t in range(rounds):
        x = theta.copy() if t == 0 else theta + (1 - eta) / eta * (theta - theta_prev)
        S = [np.zeros_like(theta) for _ in range(n)]
        B = [0] * n
        heap = [(now + times[i], i) for i in range(n)]
        heapq.heapify(heap)
        q = -(-M // n)

        def done():
            if kind == "rennala":
                return sum(B) >= M
            if kind == "malenia":
                return min(B) >= 1 and (sum(1.0 / b for b in B) / n) ** -1 >= M / n
            return min(B) >= q

        while not done():
            now, i = heapq.heappop(heap)
            S[i] = S[i] + grad_fn(i, x, rng)
            B[i] += 1
            if kind != "allreduce" or B[i] < q:
                heapq.heappush(heap, (now + times[i], i))
        if kind == "malenia":
            g = sum(S[i] / B[i] for i in range(n)) / n
        else:
            g = sum(S) / sum(B)
        d = g if t == 0 else (1 - eta) * d + eta * g
        theta_prev, theta = theta, theta + lr * d / np.linalg.norm(d)
        per_round.append(list(B))
    return theta, now, per_round


@pytest.mark.parametrize("kind", ["rennala", "malenia", "allreduce"])
@pytest.mark.parametrize("times", [[1.0, 1.0, 1.0], [1.0, 1.0, 10.0], [1.0, 2 ** 0.5, 3 ** 0.5]])
def test_simulation_matches_reference(kind, times):
    targets = [0.5, -0.2, 1.0]
    trace = []
    out = simulate(kind, np.zeros(1), gaussian_target_grad(targets), times, rounds=30, M=6, lr=0.05,
                   momentum=0.1, seed=4, trace=trace)
    theta, now, per_round = reference_run(kind, np.zeros(1), gaussian_target_grad(targets), times, 30, 6, 0.05, 0.1, 4)
    np.testing.assert_allclose(out["nigt"].theta, theta, rtol=1e-12)
    assert out["time"] == pytest.approx(now)
    assert out["accepted"].tolist() == np.sum(per_round, axis=0).tolist()
    if kind == "rennala":
        assert all(sum(b) == 6 for b in per_round)  # exactly M per round


def test_rennala_ignores_a_straggler_and_malenia_waits_for_it():
    grad = gaussian_target_grad([0.0, 0.0, 0.0])
    times = [1.0, 1.0, 100.0]
    ren = simulate("rennala", np.zeros(1), grad, times, rounds=20, M=4)
    mal = simulate("malenia", np.zeros(1), grad, times, rounds=20, M=4)
    syn = simulate("allreduce", np.zeros(1), grad, times, rounds=20, M=4)
    assert ren["accepted"][2] == 0 and ren["time"] <= 20 * 2  # the straggler never finishes in time
    assert (mal["accepted"] >= 20).all() and mal["time"] >= 20 * 100  # every worker, every round
    assert syn["time"] >= 20 * 100


def test_heterogeneous_objectives_malenia_vs_pooled():
    """docs/algorithms/nigt.md#heterogeneous-environments: pooled aggregation drifts to the speed-weighted
    optimum, Malenia to the equal-weight one."""
    grad = gaussian_target_grad([1.0, -1.0])
    ren = simulate("rennala", np.zeros(1), grad, [1, 10], rounds=400, M=20, lr=0.02, momentum=0.1, seed=1)
    mal = simulate("malenia", np.zeros(1), grad, [1, 10], rounds=400, M=20, lr=0.02, momentum=0.1, seed=1)
    assert ren["nigt"].theta[0] > 0.6  # speed-weighted optimum (10 - 1) / 11 = 0.82
    assert abs(mal["nigt"].theta[0]) < 0.2


# ---- the actor-side collector ------------------------------------------------------------------------
def test_collector_rolls_whole_episodes_from_reset_and_abandons_on_request():
    from hpcmarl.envs import VecEnv
    from hpcmarl.models import Inference
    from hpcmarl.sampler import TrajectoryCollector

    venv = VecEnv("counting_v0", 2, 0, {"max_cycles": 4, "die_at": 2})
    col = TrajectoryCollector(venv, Inference(venv.spec, 8, 1), horizon=0)
    traj, returns, lengths = col.collect(lambda: False)
    obs = traj["agent/obs"].numpy()
    assert obs.shape[:3] == (4, 2, 2) and obs[:, 0, 0, 0].tolist() == [0, 1, 2, 3]  # from reset, whole episode
    assert traj["agent/valid"][:, 0, 1].tolist() == [True, True, False, False]  # agent_1 died at step 2
    assert returns[:, 0].tolist() == [6.0, 6.0] and lengths.tolist() == [4, 4]
    assert col.steps == 8
    traj, _, _ = col.collect(lambda: False)  # the next trajectory starts from a reset again
    assert traj["agent/obs"][0, :, 0, 0].tolist() == [0, 0]
    calls = []
    assert col.collect(lambda: calls.append(1) or len(calls) >= 2) is None  # a new round: abandoned
    short = TrajectoryCollector(venv, col.policy, horizon=3).collect(lambda: False)
    assert short[0]["agent/obs"].shape[0] == 3
