"""V-trace / MA-Trace targets against slow references (no MPI)."""
import itertools

import numpy as np
import pytest
import torch

from hpcmarl.algos.matrace import joint_log_ratio, vtrace


def slow_vtrace(log_rhos, discounts, rewards, values, bootstrap, rho_bar, c_bar, rho_pg_bar, lam=1.0):
    """The sum form, one entry at a time: v_s = V(x_s) + sum_{t>=s} (prod_{i=s}^{t-1} gamma_i c_i) delta_t."""
    T, B = values.shape
    rhos = np.exp(log_rhos)
    V = np.concatenate([values, bootstrap[None]], 0)
    vs = np.zeros((T, B))
    adv = np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            total = V[s, b]
            for t in range(s, T):
                coef = 1.0
                for i in range(s, t):
                    coef *= discounts[i, b] * lam * min(c_bar, rhos[i, b])
                delta = min(rho_bar, rhos[t, b]) * (rewards[t, b] + discounts[t, b] * V[t + 1, b] - V[t, b])
                total += coef * delta
            vs[s, b] = total
    V_next = np.concatenate([vs[1:], bootstrap[None]], 0)
    for b in range(B):
        for s in range(T):
            adv[s, b] = min(rho_pg_bar, rhos[s, b]) * (rewards[s, b] + discounts[s, b] * V_next[s, b] - values[s, b])
    return vs, adv


def random_case(T=7, B=4, seed=0, done_p=0.2):
    rng = np.random.default_rng(seed)
    done = rng.random((T, B)) < done_p
    return dict(log_rhos=rng.normal(0, 0.8, (T, B)), discounts=0.9 * (1 - done), rewards=rng.normal(size=(T, B)),
                values=rng.normal(size=(T, B)), bootstrap=rng.normal(size=B))


def run(case, **kw):
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in case.items()}
    return vtrace(t["log_rhos"], t["discounts"], t["rewards"], t["values"], t["bootstrap"], **kw)


@pytest.mark.parametrize("bars", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.5), (1e9, 1e9, 1e9)])
def test_vtrace_matches_slow_reference(bars):
    case = random_case(seed=3)
    out = run(case, rho_bar=bars[0], c_bar=bars[1], rho_pg_bar=bars[2])
    vs, adv = slow_vtrace(**case, rho_bar=bars[0], c_bar=bars[1], rho_pg_bar=bars[2])
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), adv, rtol=1e-10, atol=1e-10)
    assert float(out.rho.max()) <= bars[0] and float(out.c.max()) <= bars[1]


def test_on_policy_reduces_to_n_step_returns():
    case = random_case(seed=5)
    case["log_rhos"][:] = 0.0
    out = run(case)
    T, B = case["values"].shape
    for b in range(B):
        for s in range(T):
            ret, disc = 0.0, 1.0
            for t in range(s, T):
                ret += disc * case["rewards"][t, b]
                disc *= case["discounts"][t, b]
            ret += disc * case["bootstrap"][b]
            assert out.vs[s, b].item() == pytest.approx(ret, abs=1e-10)


def test_episode_end_cuts_the_trace():
    """After a done at step 2 nothing later in the unroll (values, rewards, ratios) reaches v_0..v_2."""
    case = random_case(T=6, B=1, seed=1, done_p=0.0)
    case["discounts"][2, 0] = 0.0
    a = run(case).vs[:3]
    for k in ("rewards", "values", "log_rhos"):
        case[k][3:] += 5.0
    case["bootstrap"] += 5.0
    np.testing.assert_allclose(run(case).vs[:3].numpy(), a.numpy(), atol=1e-12)


def test_truncation_of_large_ratios():
    case = random_case(seed=2)
    case["log_rhos"][:] = 3.0  # ratio e^3 everywhere: all clipped at 1 -> the on-policy target
    clipped = run(case)
    case["log_rhos"][:] = 0.0
    np.testing.assert_allclose(clipped.vs.numpy(), run(case).vs.numpy(), atol=1e-12)
    assert torch.all(clipped.rho == 1.0) and torch.all(clipped.c == 1.0)


def test_joint_ratio_masks_agents_that_do_not_act():
    rng = np.random.default_rng(0)
    logp, logmu = (torch.tensor(rng.normal(size=(5, 3, 4))) for _ in range(2))
    acting = torch.tensor(rng.random((5, 3, 4)) > 0.3, dtype=torch.float64)
    base = joint_log_ratio(logp, logmu, acting)
    np.testing.assert_allclose(base.numpy(), ((logp - logmu) * acting).sum(-1).numpy())
    logp2 = torch.where(acting > 0, logp, logp + 7.0)  # whatever a dead agent's policy says
    np.testing.assert_allclose(joint_log_ratio(logp2, logmu, acting).numpy(), base.numpy())


# ---- the fixed point on a tabular 2-agent MDP (docs/algorithms/matrace.md#fixed-point) --------------------
def value_of(P, R, policy, gamma):
    """V of a joint policy [S, A]: solve (I - gamma P_pi) V = r_pi."""
    S = P.shape[0]
    P_pi = np.einsum("sa,sat->st", policy, P)
    r_pi = (policy * R).sum(1)
    return np.linalg.solve(np.eye(S) - gamma * P_pi, r_pi)


@pytest.mark.parametrize("mode", ["joint_large_bar", "joint_bar_1", "no_correction"])
def test_expected_operator_fixed_point(mode):
    rng = np.random.default_rng(7)
    S, n_a, gamma = 4, 3, 0.9
    joint = list(itertools.product(range(n_a), range(n_a)))
    P = rng.dirichlet(np.ones(S), size=(S, len(joint)))  # [S, A, S']
    R = rng.normal(size=(S, len(joint)))
    pi_i = rng.dirichlet(np.ones(n_a), size=(2, S))  # factorised target policy, per agent
    mu_i = rng.dirichlet(np.ones(n_a), size=(2, S))  # behaviour policy
    pi = np.array([[pi_i[0, s, a0] * pi_i[1, s, a1] for a0, a1 in joint] for s in range(S)])
    mu = np.array([[mu_i[0, s, a0] * mu_i[1, s, a1] for a0, a1 in joint] for s in range(S)])
    # per (s, a, s'): per-agent log-probs -> the joint ratio through the framework's code
    idx = [(s, a, s2) for s in range(S) for a in range(len(joint)) for s2 in range(S)]
    lp = torch.tensor([[np.log(pi_i[k, s, joint[a][k]]) for k in range(2)] for s, a, _ in idx])
    lm = torch.tensor([[np.log(mu_i[k, s, joint[a][k]]) for k in range(2)] for s, a, _ in idx])
    log_rho = joint_log_ratio(lp, lm, torch.ones_like(lp))
    if mode == "no_correction":
        log_rho = torch.zeros_like(log_rho)
    bar = 1e6 if mode == "joint_large_bar" else 1.0
    weight = np.array([mu[s, a] * P[s, a, s2] for s, a, s2 in idx])
    rewards = torch.tensor([R[s, a] for s, a, _ in idx])
    V = np.zeros(S)
    for _ in range(3000):
        out = vtrace(log_rho[None], torch.full((1, len(idx)), gamma, dtype=torch.float64), rewards[None],
                     torch.tensor([V[s] for s, _, _ in idx])[None], torch.tensor([V[s2] for _, _, s2 in idx]),
                     rho_bar=bar, c_bar=bar, rho_pg_bar=bar)
        V_new = np.zeros(S)
        np.add.at(V_new, [s for s, _, _ in idx], weight * out.vs[0].numpy())
        V = V_new
    if mode == "joint_large_bar":
        expect = value_of(P, R, pi, gamma)
    elif mode == "joint_bar_1":
        pr = np.minimum(mu, pi)  # over JOINT actions: not a product of per-agent policies
        expect = value_of(P, R, pr / pr.sum(1, keepdims=True), gamma)
    else:
        expect = value_of(P, R, mu, gamma)
    np.testing.assert_allclose(V, expect, atol=1e-6)


# ---- the learner ------------------------------------------------------------------------------------------
def make_unroll(env="counting_v0", kwargs=None, E=3, T=6, seed=0):
    from hpcmarl.comm.spec import unroll_spec
    from hpcmarl.envs import VecEnv
    from hpcmarl.models import Inference
    from hpcmarl.sampler import Sampler

    venv = VecEnv(env, E, seed, kwargs or {})
    torch.manual_seed(seed)
    s = Sampler(venv, Inference(venv.spec, 8, 1), unroll_spec(venv.spec, T, E), T)
    return venv.spec, s.collect(s.spec.alloc())


@pytest.mark.parametrize("correction", ["joint", "per_agent", "none", "joint algo.agent_returns=true"])
def test_dead_agents_do_not_change_the_loss(correction):
    """counting_v0 with agent_1 dying at step 2: whatever its behaviour log-probs and actions say after
    it died, the ratios, targets and loss stay the same."""
    from hpcmarl.algos.matrace import MATraceLearner
    from hpcmarl.algos.ppo import batch_from_unrolls
    from hpcmarl.config import load_config

    spec, rec = make_unroll(kwargs={"max_cycles": 6, "die_at": 2})
    cfg = load_config(None, ["algo.name=matrace", *f"algo.correction={correction}".split(), "algo.hidden=8",
                             "algo.layers=1"]).algo
    learner = MATraceLearner(spec, cfg, torch.device("cpu"), seed=0)
    dead = rec["agent/alive"][:-1] == 0
    assert dead.any() and not dead.all()
    base, _ = learner.loss(batch_from_unrolls(spec, [rec], "cpu"))
    rec2 = rec.copy()
    rec2["agent/logp"][dead] = -30.0
    rec2["agent/action"][dead] = 2
    other, _ = learner.loss(batch_from_unrolls(spec, [rec2], "cpu"))
    assert base.item() == pytest.approx(other.item(), rel=1e-6)


def test_joint_correction_differs_from_none_only_off_policy():
    from hpcmarl.algos.matrace import MATraceLearner
    from hpcmarl.algos.ppo import batch_from_unrolls
    from hpcmarl.config import load_config

    spec, rec = make_unroll(env="simple_spread_v3", E=2, T=5)
    losses = {}
    for corr in ("joint", "none"):
        cfg = load_config(None, ["algo.name=matrace", f"algo.correction={corr}", "algo.hidden=8", "algo.layers=1"]).algo
        learner = MATraceLearner(spec, cfg, torch.device("cpu"), seed=0)
        rec["agent/logp"][:] = learner.model.policies["agent"].dist(
            torch.from_numpy(rec["agent/obs"][:-1]), torch.from_numpy(rec["agent/action_mask"].astype(bool))
        ).log_prob(torch.from_numpy(rec["agent/action"])).detach().numpy()  # on-policy behaviour
        on, st = learner.loss(batch_from_unrolls(spec, [rec], "cpu"))
        assert st["agent/rho_mean"] == pytest.approx(1.0, abs=1e-5)
        rec_off = rec.copy()
        rec_off["agent/logp"][:] -= 0.5  # behaviour made the taken actions less likely -> ratios > 1, clipped
        rec_off["agent/logp"][0] += 2.0  # ... and more likely at t = 0 -> ratio < 1
        off, st_off = learner.loss(batch_from_unrolls(spec, [rec_off], "cpu"))
        losses[corr] = (on.item(), off.item(), st_off["agent/rho_mean"])
    assert losses["joint"][0] == pytest.approx(losses["none"][0], rel=1e-6)  # identical on-policy
    assert losses["joint"][1] != pytest.approx(losses["none"][1], rel=1e-6)  # the correction acts off-policy
    assert losses["joint"][2] < 1.0 and losses["none"][2] == 1.0


@pytest.mark.parametrize("die_at,boot_at_2", [(0, True), (3, False)])
def test_truncated_episodes_bootstrap_from_the_final_observation(die_at, boot_at_2):
    """counting_v0 (observation = step index) ends at step 3 of every episode: by truncation, V-trace's reward there
    gains gamma * V(final observation) (here V = the step index, 3); when an agent terminates at that step the
    episode ended by termination and nothing is added. Other steps get nothing either way."""
    from hpcmarl.algos.matrace import MATraceLearner
    from hpcmarl.algos.ppo import batch_from_unrolls
    from hpcmarl.config import load_config

    spec, rec = make_unroll(kwargs={"max_cycles": 3, "die_at": die_at}, T=5)
    cfg = load_config(None, ["algo.name=matrace", "algo.hidden=8", "algo.layers=1", "algo.gamma=0.5"]).algo
    learner = MATraceLearner(spec, cfg, torch.device("cpu"), seed=0)
    learner.model.values = lambda b, name: b[f"{name}/obs"][..., 0].amax(-1)
    boot = learner.truncation_bootstrap(batch_from_unrolls(spec, [rec], "cpu"), "agent")
    expect = torch.zeros(5, 3)
    if boot_at_2:
        expect[2] = 0.5 * 3
    torch.testing.assert_close(boot, expect)


def test_agent_ids_reach_the_actor_and_the_learner_alike(collect):
    """algo.agent_id: the actor's policy (the registry's inference for matrace) reads the ids as the learner's does
    (same weights, same action distribution for the same observations; agents seeing the same observation act
    differently), so a batch collected with the learner's weights is on-policy: every ratio is 1."""
    from hpcmarl.algos import base
    from hpcmarl.algos.matrace import MATraceLearner
    from hpcmarl.algos.ppo import batch_from_unrolls
    from hpcmarl.config import load_config
    from hpcmarl.envs import probe_spec

    kwargs = {"N": 3, "max_cycles": 6}
    spec = probe_spec("simple_spread_v3", kwargs)
    g = spec.groups[0]
    cfg = lambda ids: load_config(None, ["algo.name=matrace", "algo.hidden=16", "algo.layers=1",
                                         f"algo.agent_id={ids}"]).algo
    learner = MATraceLearner(spec, cfg(True), torch.device("cpu"), seed=0)
    n_pol = lambda m: sum(p.numel() for p in m.model.policies.parameters())
    assert n_pol(learner) == n_pol(MATraceLearner(spec, cfg(False), torch.device("cpu"), seed=0)) + g.n * 16
    actor = base.get("matrace").make_inference(spec, cfg(True))
    actor.load(learner.policy_flat(), 1)
    same = torch.randn(1, g.obs_dim).expand(g.n, g.obs_dim)
    out = actor.policies[g.name].net(same)
    assert torch.equal(out, learner.model.policies[g.name].net(same)) and not torch.allclose(out[0], out[1])
    c = collect("simple_spread_v3", 6, 2, 1, kwargs, seed=4, flat=learner.policy_flat(), agent_id=True)
    _, stats = learner.loss(batch_from_unrolls(spec, c.records, "cpu"))
    assert stats[f"{g.name}/rho_mean"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("correction", ["joint", "per_agent"])
def test_normalized_advantages_do_not_depend_on_the_reward_scale(correction):
    """algo.normalize_advantages: with the critic's values at 0 the advantages are linear in the rewards, so the
    policy loss of rewards x 7 is that of the rewards themselves once standardised (and 7 times it without); the
    standardised advantages have mean 0 and standard deviation 1 over the acting steps."""
    from hpcmarl.algos import matrace
    from hpcmarl.algos.ppo import batch_from_unrolls
    from hpcmarl.config import load_config

    spec, rec = make_unroll(env="simple_spread_v3", E=2, T=5)
    rewards = rec["agent/reward"].copy()
    seen = []
    real = matrace.standardized
    spy = lambda x, mask: seen.append(real(x, mask)[mask.bool()]) or real(x, mask)
    loss = {}
    for norm in (True, False):
        cfg = load_config(None, ["algo.name=matrace", f"algo.correction={correction}", "algo.hidden=8",
                                 "algo.layers=1", f"algo.normalize_advantages={norm}"]).algo
        learner = matrace.MATraceLearner(spec, cfg, torch.device("cpu"), seed=0)
        learner.model.values = lambda b, name: torch.zeros(b[f"{name}/obs"].shape[:-1 if correction == "per_agent"
                                                                                 else -2])
        for scale in (1.0, 7.0):
            rec["agent/reward"][:] = rewards * scale
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(matrace, "standardized", spy)
                loss[norm, scale] = learner.loss(batch_from_unrolls(spec, [rec], "cpu"))[1]["agent/policy_loss"]
    assert loss[True, 7.0] == pytest.approx(loss[True, 1.0], abs=1e-6)
    assert loss[False, 7.0] == pytest.approx(7 * loss[False, 1.0], rel=1e-5)
    assert loss[True, 1.0] != pytest.approx(loss[False, 1.0], rel=1e-3)
    assert len(seen) == 2  # standardised only with the option, once per loss
    torch.testing.assert_close(seen[0], seen[1], atol=1e-5, rtol=0)
    assert float(seen[0].mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(seen[0].std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("agent_returns", [True, False])
def test_agent_returns_end_where_the_agent_dies(agent_returns, monkeypatch):
    """counting_v0 (reward 1 per agent per step, 6 steps) with agent_1 dying after step 2, values 0, on-policy,
    gamma 0.5: the team reward is 2, 2, 1, 1, 1, 1. A team return (the default) is the same for both agents:
    3.47 at step 0. With algo.agent_returns agent_0 keeps that return while agent_1's ends where it dies:
    2 + 0.5 * 2 = 3; the critic has one output per agent."""
    from hpcmarl.algos import matrace
    from hpcmarl.algos.ppo import batch_from_unrolls
    from hpcmarl.config import load_config

    spec, rec = make_unroll(kwargs={"max_cycles": 6, "die_at": 2}, E=1, T=6)
    cfg = load_config(None, ["algo.name=matrace", "algo.hidden=8", "algo.layers=1", "algo.gamma=0.5",
                             f"algo.agent_returns={agent_returns}"]).algo
    learner = matrace.MATraceLearner(spec, cfg, torch.device("cpu"), seed=0)
    assert learner.model.critics["agent"][-1].out_features == (2 if agent_returns else 1)
    learner.model.values = lambda b, name: torch.zeros(b[f"{name}/obs"].shape[:-1 if agent_returns else -2])
    rec["agent/logp"][:] = learner.model.policies["agent"].dist(
        torch.from_numpy(rec["agent/obs"][:-1]), torch.from_numpy(rec["agent/action_mask"].astype(bool))
    ).log_prob(torch.from_numpy(rec["agent/action"])).detach().numpy()  # on-policy: every ratio 1
    seen = []
    real = matrace.vtrace
    monkeypatch.setattr(matrace, "vtrace", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    learner.loss(batch_from_unrolls(spec, [rec], "cpu"))
    team = [3.46875, 2.9375, 1.875, 1.75, 1.5, 1.0]
    if agent_returns:  # [T, B * n]: one column per agent
        torch.testing.assert_close(seen[0].vs[:, 0], torch.tensor(team))
        torch.testing.assert_close(seen[0].vs[:2, 1], torch.tensor([3.0, 2.0]))
    else:
        torch.testing.assert_close(seen[0].vs[:, 0], torch.tensor(team))
