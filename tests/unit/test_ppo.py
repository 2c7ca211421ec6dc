"""GAE, the PPO loss and PPOLearner (update, checkpoint state) against slow references."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hpcmarl.algos.ppo import PPOConfig, PPOLearner, gae, masked_mean, ppo_loss, team_reward
from hpcmarl.algos.ppo_recurrent import chunk_dist, replay_policy
from hpcmarl.envs import probe_spec
from hpcmarl.storage import load_checkpoint, save_checkpoint

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------
# GAE
# ------------------------------------------------------------------------------------------------
def gae_reference(r, v, d, gamma, lam):
    """Textbook GAE for one sequence: delta_t = r_t + gamma (1 - d_t) V_{t+1} - V_t and
    A_t = sum_l (gamma lambda)^l delta_{t+l}, the sum cut after the first done at or after t."""
    T = len(r)
    delta = [r[t] + gamma * (1.0 - d[t]) * v[t + 1] - v[t] for t in range(T)]
    adv = []
    for t in range(T):
        a = 0.0
        for l in range(T - t):
            a += (gamma * lam) ** l * delta[t + l]
            if d[t + l]:
                break
        adv.append(a)
    return adv, [adv[t] + v[t] for t in range(T)]


def random_gae_inputs(shape_rest, T, seed, p_done=0.2, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn((T,) + shape_rest, generator=g, dtype=dtype)
    v = torch.randn((T + 1,) + shape_rest, generator=g, dtype=dtype)
    d = (torch.rand((T,) + shape_rest, generator=g) < p_done).to(dtype)
    return r, v, d


def apply_reference(fn, r, v, d, *args):
    """Run a 1-D reference on every trailing index of [T, ...] tensors."""
    adv = torch.zeros_like(r)
    ret = torch.zeros_like(r)
    for idx in itertools.product(*[range(s) for s in r.shape[1:]]):
        sl = (slice(None),) + idx
        a, g = fn(r[sl].tolist(), v[sl].tolist(), d[sl].tolist(), *args)
        adv[sl] = torch.tensor(a, dtype=r.dtype)
        ret[sl] = torch.tensor(g, dtype=r.dtype)
    return adv, ret


@pytest.mark.parametrize("shape_rest,T,seed,gamma,lam", [
    ((), 1, 0, 0.99, 0.95),
    ((), 17, 1, 0.99, 0.95),
    ((4,), 12, 2, 0.9, 0.8),
    ((3, 2), 25, 3, 0.99, 0.95),
    ((5, 3), 9, 4, 0.5, 0.3),
    ((2, 4), 30, 5, 1.0, 1.0),
])
def test_gae_matches_reference(shape_rest, T, seed, gamma, lam):
    r, v, d = random_gae_inputs(shape_rest, T, seed)
    assert d.sum() > 0 or T == 1 or shape_rest == ()  # the random dones actually cut somewhere
    adv, ret = gae(r, v, d, gamma, lam)
    ref_adv, ref_ret = apply_reference(gae_reference, r, v, d, gamma, lam)
    assert adv.shape == r.shape and ret.shape == r.shape
    torch.testing.assert_close(adv, ref_adv, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ret, ref_ret, rtol=1e-10, atol=1e-10)


def test_gae_float32_and_no_input_mutation():
    r, v, d = random_gae_inputs((8, 3), 20, 7, dtype=torch.float32)
    copies = [x.clone() for x in (r, v, d)]
    adv, ret = gae(r, v, d, 0.99, 0.95)
    for x, c in zip((r, v, d), copies):
        assert torch.equal(x, c)
    ref_adv, ref_ret = apply_reference(gae_reference, r.double(), v.double(), d.double(), 0.99, 0.95)
    torch.testing.assert_close(adv.double(), ref_adv, rtol=1e-5, atol=1e-5)
    assert adv.dtype == torch.float32


def discounted_returns_reference(r, v, d, gamma):
    """G_t = r_t + gamma G_{t+1}, restarted at dones; the sequence end bootstraps from V_T."""
    T = len(r)
    G = [0.0] * T
    nxt = v[T]
    for t in reversed(range(T)):
        nxt = r[t] + gamma * (0.0 if d[t] else nxt)
        G[t] = nxt
    return [G[t] - v[t] for t in range(T)], G


@pytest.mark.parametrize("gamma", [0.9, 0.99, 1.0])
def test_gae_lambda_one_is_discounted_return(gamma):
    r, v, d = random_gae_inputs((3, 2), 15, 11)
    adv, ret = gae(r, v, d, gamma, 1.0)
    ref_adv, ref_ret = apply_reference(discounted_returns_reference, r, v, d, gamma)
    torch.testing.assert_close(ret, ref_ret, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(adv, ref_ret - v[:-1], rtol=1e-10, atol=1e-10)


def test_gae_lambda_zero_is_td_error():
    r, v, d = random_gae_inputs((4,), 10, 12)
    adv, _ = gae(r, v, d, 0.9, 0.0)
    torch.testing.assert_close(adv, r + 0.9 * (1 - d) * v[1:] - v[:-1])


def nstep_reference(r, v, d, term, nxt, gamma, n):
    """n-step returns written out: sum rewards for up to n steps, stopping at an episode's end (bootstrapping from
    the final observation's value there unless terminated) or at the unroll's end (from v[T]), else from v[t+n]."""
    T = len(r)
    ret = np.zeros(T)
    for t in range(T):
        g, disc = 0.0, 1.0
        for k in range(n):
            j = t + k
            g += disc * r[j]
            disc *= gamma
            if d[j]:
                g += disc * (0.0 if term[j] else nxt[j])
                break
            if j == T - 1:
                g += disc * v[T]
                break
        else:
            g += disc * v[t + n]
        ret[t] = g
    return ret


@pytest.mark.parametrize("n", [1, 3, 5, 40])
@pytest.mark.parametrize("seed", [0, 1])
def test_nstep_advantages_match_written_out_returns(n, seed):
    r, v, d = random_gae_inputs((), 12, seed, p_done=0.25)
    g = torch.Generator().manual_seed(seed + 7)
    term = d * (torch.rand(12, generator=g, dtype=torch.float64) < 0.5)  # some ends are truncations
    nxt = torch.randn(12, generator=g, dtype=torch.float64)
    adv, ret = gae(r, v, d, 0.9, 0.95, term, nxt, nstep=n)
    ref = nstep_reference(r.numpy(), v.numpy(), d.numpy(), term.numpy(), nxt.numpy(), 0.9, n)
    np.testing.assert_allclose(ret.numpy(), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(adv, ret - v[:-1])
    if n == 1:  # one step: the TD error, GAE with lambda 0
        torch.testing.assert_close(adv, gae(r, v, d, 0.9, 0.0, term, nxt)[0])
    if n >= 12:  # longer than the unroll: GAE with lambda 1
        torch.testing.assert_close(adv, gae(r, v, d, 0.9, 1.0, term, nxt)[0])


def test_gae_truncation_bootstraps_from_the_final_value():
    """done at t=2 of 5 by truncation: the TD error there bootstraps from the final observation's value (7), not
    from values[3] (the next episode's first observation); the trace is still cut; a termination bootstraps from 0."""
    r = torch.ones(5, dtype=torch.float64)
    v = torch.zeros(6, dtype=torch.float64)
    v[3] = 50.0  # the next episode's first value: must not leak into step 2
    d = torch.tensor([0, 0, 1, 0, 0], dtype=torch.float64)
    nxt = torch.zeros(5, dtype=torch.float64)
    nxt[2] = 7.0
    adv, ret = gae(r, v, d, 0.5, 1.0, torch.zeros(5, dtype=torch.float64), nxt)
    assert adv[2].item() == pytest.approx(1 + 0.5 * 7.0)
    assert adv[1].item() == pytest.approx(1 + 0.5 * adv[2].item())
    assert adv[3].item() == pytest.approx(1 - 50.0 + 0.5 * 1.0)  # the next episode starts afresh
    term = d.clone()  # the same end as a termination
    adv_t, _ = gae(r, v, d, 0.5, 1.0, term, nxt)
    assert adv_t[2].item() == 1.0
    torch.testing.assert_close(adv_t, gae(r, v, d, 0.5, 1.0)[0])


def test_team_reward_is_the_mean_over_acting_agents():
    r = torch.tensor([[1.0, 3.0, 8.0], [2.0, 4.0, 0.0]])
    acting = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(team_reward(r, acting), torch.tensor([[2.0, 2.0, 0.0], [2.0, 2.0, 2.0]]))


@pytest.mark.parametrize("bootstrap", [True, False])
def test_learner_bootstraps_truncated_episodes_from_final_observations(collect, bootstrap):
    """counting_v0 (observation = step index, reward 1 per step) truncates at step 3 and agent_1 terminates at step
    2; with a critic whose value is the step index and lambda 0, the return target at the truncating step is
    1 + gamma * 3 (the final observation's step index), at the terminating step 1, elsewhere 1 + gamma * (t+1)."""
    kwargs = {"n_agents": 2, "max_cycles": 3, "die_at": 2}
    spec = probe_spec("counting_v0", kwargs)
    learner = make_learner(spec, "ippo", T=5, gae_lambda=0.0, gamma=0.5, value_norm=False, reward="individual",
                           bootstrap_truncated=bootstrap)
    c = collect("counting_v0", 5, 2, 1, kwargs)
    rec = c.records[0]
    fin = rec["agent/final_obs"]
    assert fin[2, :, 0, 0].tolist() == [3.0, 3.0] and not fin[2, :, 1].any()  # agent_1 terminated: no final obs
    assert not fin[[0, 1, 3, 4]].any() and rec["agent/obs"][3, :, 0, 0].tolist() == [0.0, 0.0]  # obs[3]: reset
    learner.model.values = lambda obs, state=None: {"agent": obs["agent"][..., 0]}
    b = learner.batch_from_unrolls(c.records)
    learner.advantages(b)
    ret = b["agent/ret"]  # [T, E, n]
    assert torch.allclose(ret[2, :, 0], torch.full((2,), 1 + 0.5 * 3 if bootstrap else 1.0))
    assert torch.allclose(ret[1, :, 1], torch.ones(2))  # agent_1 terminated at step index 2 (t = 1)
    assert torch.allclose(ret[0, :, 0], torch.full((2,), 1 + 0.5 * 1))


def test_reward_norm_learns_from_standardised_rewards_of_acting_agents(collect):
    """algo.reward_norm: with zero values and lambda 0 the return target is the reward standardised by the running
    mean and std of the rewards of the agents that acted (here one batch: its own mean and std); a dead agent's is 0."""
    kwargs = {"n_agents": 2, "max_cycles": 6, "die_at": 2}
    spec = probe_spec("counting_v0", kwargs)
    learner = make_learner(spec, "ippo", T=5, gae_lambda=0.0, value_norm=False, reward="individual",
                           reward_norm=True)
    c = collect("counting_v0", 5, 2, 1, kwargs)
    learner.model.values = lambda obs, state=None: {"agent": torch.zeros(obs["agent"].shape[:-1])}
    b = learner.batch_from_unrolls(c.records)
    b["agent/reward"] = torch.rand(b["agent/reward"].shape, generator=torch.Generator().manual_seed(0)) ** 4
    mask = b["agent/alive"][:-1]
    assert 0 < mask.sum() < mask.numel()  # agent_1 is dead for some steps
    r = b["agent/reward"][mask > 0]
    learner.advantages(b)
    want = (b["agent/reward"] - r.mean()) / r.std(unbiased=False) * mask
    assert torch.allclose(b["agent/ret"], want, atol=1e-5)
    assert learner.reward_norm["agent"].stats()[1] == pytest.approx(float(r.std(unbiased=False)), rel=1e-5)


def test_gae_done_cuts_bootstrap():
    # constant reward 1, values 0, done at t=2 of 5: the advantage at t=2 is just r_2
    r = torch.ones(5, dtype=torch.float64)
    v = torch.full((6,), 100.0, dtype=torch.float64)
    v[:5] = 0.0
    d = torch.tensor([0, 0, 1, 0, 0], dtype=torch.float64)
    adv, _ = gae(r, v, d, 0.5, 1.0)
    assert adv[2].item() == 1.0
    assert adv[1].item() == pytest.approx(1 + 0.5)
    assert adv[0].item() == pytest.approx(1 + 0.5 + 0.25)
    assert adv[4].item() == pytest.approx(1 + 0.5 * 100.0)  # the last step bootstraps from V_T


# ------------------------------------------------------------------------------------------------
# PPO loss
# ------------------------------------------------------------------------------------------------
def loss_reference(new_logp, old_logp, adv, new_v, old_v, ret, ent, mask, clip, vclip, ecoef, vcoef):
    """Per-element python loops over the flattened tensors."""
    flat = [x.detach().reshape(-1).double().tolist() for x in (new_logp, old_logp, adv, new_v, old_v, ret, ent, mask)]
    pg_sum = v_sum = e_sum = kl_sum = cf_sum = n = 0.0
    for nl, ol, a, nv, ov, R, e, m in zip(*flat):
        if not m:
            continue
        ratio = math.exp(nl - ol)
        surr = min(ratio * a, min(max(ratio, 1 - clip), 1 + clip) * a)
        pg_sum += -surr
        err = (nv - R) ** 2
        if vclip > 0:
            vc = ov + min(max(nv - ov, -vclip), vclip)
            err = max(err, (vc - R) ** 2)
        v_sum += err
        e_sum += e
        kl_sum += (ratio - 1) - (nl - ol)
        cf_sum += 1.0 if abs(ratio - 1) > clip else 0.0
        n += 1
    n = max(n, 1.0)
    pg, vl, en = pg_sum / n, 0.5 * v_sum / n, e_sum / n
    return pg + vcoef * vl - ecoef * en, {"policy_loss": pg, "value_loss": vl, "entropy": en,
                                          "approx_kl": kl_sum / n, "clip_fraction": cf_sum / n}


def random_loss_inputs(shape, seed, p_mask=0.7):
    g = torch.Generator().manual_seed(seed)
    rn = lambda s=1.0: torch.randn(shape, generator=g, dtype=torch.float64) * s
    old_logp = -torch.rand(shape, generator=g, dtype=torch.float64) * 2
    new_logp = old_logp + rn(0.4)  # ratios on both sides of the clip range
    old_v = rn()
    new_v = old_v + rn(0.5)
    ret = old_v + rn()
    adv = rn()
    ent = torch.rand(shape, generator=g, dtype=torch.float64)
    mask = (torch.rand(shape, generator=g) < p_mask).double()
    return dict(new_logp=new_logp, old_logp=old_logp, adv=adv, new_v=new_v, old_v=old_v, returns=ret,
                entropy=ent, mask=mask)


def call_loss(x, clip=0.2, value_clip=0.2, entropy_coef=0.01, value_coef=1.0):
    return ppo_loss(x["new_logp"], x["old_logp"], x["adv"], x["new_v"], x["old_v"], x["returns"], x["entropy"],
                    x["mask"], clip, value_clip, entropy_coef, value_coef)


@pytest.mark.parametrize("shape,seed,clip,vclip,ecoef,vcoef", [
    ((40,), 0, 0.2, 0.2, 0.01, 1.0),
    ((6, 5, 3), 1, 0.1, 0.0, 0.05, 0.5),
    ((7, 4), 2, 0.3, 0.5, 0.0, 2.0),
])
def test_ppo_loss_matches_reference(shape, seed, clip, vclip, ecoef, vcoef):
    x = random_loss_inputs(shape, seed)
    loss, stats = call_loss(x, clip, vclip, ecoef, vcoef)
    ref, ref_stats = loss_reference(x["new_logp"], x["old_logp"], x["adv"], x["new_v"], x["old_v"], x["returns"],
                                    x["entropy"], x["mask"], clip, vclip, ecoef, vcoef)
    assert loss.item() == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert set(stats) == set(ref_stats)
    for k in ref_stats:
        assert stats[k] == pytest.approx(ref_stats[k], rel=1e-6, abs=1e-9), k
    assert 0 < ref_stats["clip_fraction"] < 1  # the inputs exercise both clipped and unclipped rows


def test_ppo_loss_all_rows_masked_is_zero_not_nan():
    x = random_loss_inputs((10,), 3)
    x["mask"] = torch.zeros(10, dtype=torch.float64)
    loss, stats = call_loss(x)
    assert loss.item() == 0.0
    assert all(v == 0.0 for v in stats.values())


def _grads(x, **kw):
    leaves = {k: x[k].clone().requires_grad_(True) for k in ("new_logp", "new_v", "entropy")}
    y = {**x, **leaves}
    loss, stats = call_loss(y, **kw)
    loss.backward()
    return loss.item(), stats, {k: v.grad.clone() for k, v in leaves.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_rows_do_not_change_loss_or_gradient(seed):
    x = random_loss_inputs((8, 6), seed, p_mask=0.5)
    masked = x["mask"] == 0
    assert masked.any() and (~masked).any()
    loss1, stats1, g1 = _grads(x)
    g = torch.Generator().manual_seed(100 + seed)
    y = dict(x)
    for k in ("new_logp", "old_logp", "adv", "new_v", "old_v", "returns", "entropy"):
        noise = torch.randn(x[k].shape, generator=g, dtype=torch.float64) * 3
        y[k] = torch.where(masked, x[k] + noise, x[k])
        assert not torch.equal(y[k], x[k])
    loss2, stats2, g2 = _grads(y)
    assert loss2 == pytest.approx(loss1, rel=1e-12, abs=1e-12)
    for k in stats1:
        assert stats2[k] == pytest.approx(stats1[k], rel=1e-9, abs=1e-12), k
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-12, atol=1e-12)
        assert (g1[k][masked] == 0).all()  # no gradient flows into masked rows
    assert (g1["new_logp"][~masked] != 0).any()


@pytest.mark.parametrize("adv,ratio,clipped", [
    (1.5, 1.6, True),     # A > 0, ratio above 1 + clip: clipped, no gradient
    (1.5, 0.5, False),    # A > 0, ratio below 1 - clip: the unclipped (smaller) term wins
    (-1.5, 0.5, True),    # A < 0, ratio below 1 - clip: clipped, no gradient
    (-1.5, 1.6, False),   # A < 0, ratio above 1 + clip: unclipped term wins
    (2.0, 1.1, False),    # inside the range
    (-2.0, 0.9, False),
])
def test_ppo_clipping(adv, ratio, clipped):
    clip = 0.2
    old_logp = torch.tensor([-1.0], dtype=torch.float64)
    new_logp = (old_logp + math.log(ratio)).requires_grad_(True)
    z = torch.zeros(1, dtype=torch.float64)
    loss, stats = ppo_loss(new_logp, old_logp, torch.tensor([adv], dtype=torch.float64), z, z, z, z,
                           torch.ones(1, dtype=torch.float64), clip, 0.0, 0.0, 1.0)
    loss.backward()
    if clipped:
        r_c = min(max(ratio, 1 - clip), 1 + clip)
        assert loss.item() == pytest.approx(-r_c * adv)
        assert new_logp.grad.item() == 0.0
    else:
        assert loss.item() == pytest.approx(-ratio * adv)
        # d/dlogp of -ratio * A = -ratio * A
        assert new_logp.grad.item() == pytest.approx(-ratio * adv)
    assert stats["clip_fraction"] == (1.0 if abs(ratio - 1) > clip else 0.0)
    assert stats["approx_kl"] == pytest.approx((ratio - 1) - math.log(ratio))


@pytest.mark.parametrize("new_v,old_v,ret,expect", [
    (2.0, 0.0, 2.0, 0.5 * (0.2 - 2.0) ** 2),   # clipped prediction is worse: max picks it
    (0.1, 0.0, 2.0, 0.5 * (0.1 - 2.0) ** 2),   # within the clip range
    (3.0, 2.0, 0.0, 0.5 * 3.0 ** 2),           # unclipped error is larger
])
def test_value_clipping(new_v, old_v, ret, expect):
    t = lambda a: torch.tensor([a], dtype=torch.float64)
    loss, stats = ppo_loss(t(-1.0), t(-1.0), t(0.0), t(new_v), t(old_v), t(ret), t(0.0), t(1.0),
                           0.2, 0.2, 0.0, 1.0)
    assert stats["value_loss"] == pytest.approx(expect)
    assert loss.item() == pytest.approx(expect)


def test_masked_mean():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0])
    m = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    assert masked_mean(x, torch.zeros(4)).item() == 0.0


# ------------------------------------------------------------------------------------------------
# PPOLearner
# ------------------------------------------------------------------------------------------------
def make_learner(spec, algo="mappo", T=5, seed=0, **kw):
    cfg = PPOConfig(name=algo, unroll_length=T, hidden=16, layers=1, **kw)
    return PPOLearner(spec, cfg, CPU, seed)


ENV_CASES = [
    ("counting_v0", {"n_agents": 2, "max_cycles": 4, "die_at": 2}, None),
    ("simple_spread_v3", {"N": 2, "max_cycles": 6}, None),
    ("simple_tag_v3", {"max_cycles": 5}, None),
]


@pytest.mark.parametrize("algo", ["mappo", "ippo"])
@pytest.mark.parametrize("env,kwargs,pmap", ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_update_runs_and_changes_parameters(collect, env, kwargs, pmap, algo):
    T, E = 5, 3
    learner = make_learner(probe_spec(env, kwargs, pmap), algo, T, epochs=2, minibatches=3)
    c = collect(env, T, E, 2, kwargs, seed=1, policy_map=pmap, flat=learner.policy_flat(), version=7)
    assert c.records[0]["meta"][0] == 7
    before = [p.detach().clone() for p in learner.params]
    policy_before = learner.policy_flat()
    calls = []
    stats = learner.update(c.records, reduce_grads=lambda params, w: calls.append((len(params), w)))
    # gradients reduced once per minibatch, weighted by the batch rows (T x all env copies)
    assert calls == [(len(learner.params), float(T * 2 * E))] * (2 * 3)
    for g in learner.spec.groups:
        for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
            assert math.isfinite(stats[f"{g.name}/{k}"])
        assert stats[f"{g.name}/entropy"] > 0
    assert math.isfinite(stats["grad_norm"]) and stats["grad_norm"] > 0
    changed = [not torch.equal(a, b.detach()) for a, b in zip(before, learner.params)]
    assert all(changed), "every parameter tensor (policy and critic) should move"
    assert not np.array_equal(policy_before, learner.policy_flat())
    assert all(torch.isfinite(p).all() for p in learner.params)


@pytest.mark.parametrize("env,kwargs,pmap", ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_first_minibatch_reproduces_actor_logp(collect, env, kwargs, pmap):
    """With the actor's weights, the learner's log-probs of the sampled actions equal the stored ones:
    before the first optimizer step the ratio is 1 (approx_kl 0, nothing clipped)."""
    learner = make_learner(probe_spec(env, kwargs, pmap), "mappo", 4, epochs=1, minibatches=1)
    c = collect(env, 4, 2, 1, kwargs, seed=3, policy_map=pmap, flat=learner.policy_flat())
    stats = learner.update(c.records)
    for g in learner.spec.groups:
        assert abs(stats[f"{g.name}/approx_kl"]) < 1e-6
        assert stats[f"{g.name}/clip_fraction"] == 0.0


@pytest.mark.parametrize("algo,recurrent", [("mappo", False), ("ippo", False), ("mappo", True)])
def test_agent_ids_tell_agents_apart_the_same_on_actor_and_learner(collect, algo, recurrent):
    """algo.agent_id: agents that share a network but see the same observation get different action
    distributions (without ids they get the same), and the learner appends the ids as the actor did: with the
    actor's weights the first minibatch's ratio is 1."""
    from hpcmarl.models import Inference

    spec = probe_spec("simple_spread_v3", {"N": 3, "max_cycles": 6})
    g = spec.groups[0]
    same = torch.randn(1, g.obs_dim).expand(g.n, g.obs_dim)
    for ids in (False, True):
        pol = Inference(spec, 16, 2, recurrent=recurrent, agent_id=ids).policies[g.name]
        out = pol.step(same, torch.zeros(g.n, 16))[0] if recurrent else pol.net(same)
        assert (not torch.allclose(out[0], out[1])) == ids
    T = 6
    learner = make_learner(spec, algo, T, epochs=1, minibatches=1, agent_id=True, recurrent=recurrent)
    assert sum(p.numel() for p in learner.model.policies.parameters()) == sum(
        p.numel() for p in make_learner(spec, algo, T, recurrent=recurrent).model.policies.parameters()) + g.n * 16
    c = collect("simple_spread_v3", T, 2, 1, {"N": 3, "max_cycles": 6}, seed=4, flat=learner.policy_flat(),
                recurrent=recurrent, agent_id=True)
    stats = learner.update(c.records)
    assert abs(stats[f"{g.name}/approx_kl"]) < 1e-6 and stats[f"{g.name}/clip_fraction"] == 0.0


def test_batch_from_unrolls_concatenates_env_axis(collect):
    T, E = 4, 2
    c = collect("counting_v0", T, E, 3, {"n_agents": 2, "max_cycles": 3})
    learner = make_learner(c.venv.spec, "ippo", T)
    b = learner.batch_from_unrolls(c.records)
    assert b["agent/obs"].shape == (T + 1, 3 * E, 2, 2)
    assert b["agent/reward"].shape == (T, 3 * E, 2)
    for u, rec in enumerate(c.records):
        np.testing.assert_array_equal(b["agent/obs"][:, u * E:(u + 1) * E].numpy(), rec["agent/obs"])
        np.testing.assert_array_equal(b["agent/action"][:, u * E:(u + 1) * E].numpy(), rec["agent/action"])
    done = np.maximum(np.concatenate([r["agent/terminated"] for r in c.records], 1),
                      np.concatenate([r["agent/truncated"] for r in c.records], 1))
    np.testing.assert_array_equal(b["agent/done"].numpy(), done.astype(np.float32))
    assert b["agent/done"].sum() > 0


def _optim_state(learner):
    return {k: v for k, v in learner.state_arrays().items() if k.startswith("optim/")}


def _assert_same_arrays(a, b):
    assert set(a) == set(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert x.tobytes() == y.tobytes(), k


@pytest.mark.parametrize("via_checkpoint", [False, True])
def test_state_arrays_round_trip(collect, tmp_path, via_checkpoint):
    kwargs = {"N": 2, "max_cycles": 6}
    spec = probe_spec("simple_spread_v3", kwargs)
    a = make_learner(spec, "mappo", 5, seed=0, epochs=2, minibatches=2, reward_norm=True)
    c = collect("simple_spread_v3", 5, 2, 2, kwargs, seed=2, flat=a.policy_flat())
    a.update(c.records[:1])  # optimizer state exists after a step
    arrays = {k: np.array(v, copy=True) for k, v in a.state_arrays().items()}
    assert any(k.startswith("optim/") for k in arrays) and {"rng/learner_gen", "reward_norm/agent"} <= set(arrays)
    for v in arrays.values():
        assert isinstance(v, np.ndarray) and v.dtype != object
    if via_checkpoint:
        save_checkpoint(str(tmp_path), 1, arrays, {"update": 1}, keep=2)
        arrays, _ = load_checkpoint(str(tmp_path / "ckpt-000000001.h5"))

    b = make_learner(spec, "mappo", 5, seed=123, epochs=2, minibatches=2, reward_norm=True)
    assert not all(torch.equal(p, q) for p, q in zip(a.params, b.params))
    b.load_state_arrays(arrays)
    for p, q in zip(a.params, b.params):
        assert torch.equal(p, q)
    _assert_same_arrays(a.state_arrays(), b.state_arrays())

    # identical update from both -> identical parameters and optimizer state
    a.update(c.records[1:])
    b.update(c.records[1:])
    for p, q in zip(a.params, b.params):
        assert torch.equal(p, q)
    _assert_same_arrays(_optim_state(a), _optim_state(b))
    after = a.state_arrays()
    assert any(not np.array_equal(after[k], arrays[k]) for k in arrays if k.startswith("model/"))


def test_state_arrays_is_a_snapshot(collect):
    """The arrays must not alias the live parameters / optimizer moments: a later update (or a
    checkpoint written asynchronously) must still see the state at the time of the call."""
    kwargs = {"n_agents": 2, "max_cycles": 3}
    learner = make_learner(probe_spec("counting_v0", kwargs), "ippo", 4, epochs=1, minibatches=1)
    c = collect("counting_v0", 4, 2, 2, kwargs, flat=learner.policy_flat())
    learner.update(c.records[:1])
    arrays = learner.state_arrays()
    copies = {k: np.array(v, copy=True) for k, v in arrays.items()}
    learner.update(c.records[1:])
    changed = sorted(k for k in arrays if not np.array_equal(arrays[k], copies[k]))
    assert changed == [], f"state_arrays() results changed by a later update: {changed[:4]} ..."


@pytest.mark.parametrize("T,E,minibatches", [(5, 2, 6), (3, 2, 4), (5, 2, 10), (25, 8, 18)])
def test_update_takes_exactly_the_configured_minibatches(collect, T, E, minibatches):
    """``algo.minibatches`` optimizer steps per epoch, also when it does not divide T x B. With several
    learners this count is the number of gradient allreduces, so it must not depend on how many actors
    (rows) a learner has, or the learners' collectives no longer pair up."""
    kwargs = {"n_agents": 2, "max_cycles": 3}
    spec = probe_spec("counting_v0", kwargs)
    c = collect("counting_v0", T, E, 2, kwargs)
    for n_unrolls in (1, 2):  # a learner serving one actor, one serving two
        learner = make_learner(spec, "ippo", T, epochs=2, minibatches=minibatches)
        calls = []
        learner.update(c.records[:n_unrolls], reduce_grads=lambda params, w: calls.append(w))
        assert len(calls) == 2 * minibatches, (n_unrolls, len(calls))


# ------------------------------------------------------------------------------------------------
# recurrent policies (rMAPPO / rIPPO)
# ------------------------------------------------------------------------------------------------
REC_KW = {"n_agents": 2, "max_cycles": 7, "die_at": 5}  # episodes end inside and across unrolls of 5 steps


def test_recurrent_hidden_state_is_carried_across_unrolls_and_reset_at_episode_ends(collect):
    T, E = 5, 3
    c = collect("counting_v0", T, E, 1, REC_KW, seed=2, recurrent=True)
    first = c.records[0]
    assert not first["agent/h0"].any()  # a fresh actor starts from zero
    end = c.policy.h["agent"].numpy().copy()
    second, = c.more(1)
    np.testing.assert_array_equal(second["agent/h0"], end)  # carried into the next unroll
    assert np.abs(second["agent/h0"]).sum() > 0
    # episodes of 7 steps: every copy finished at step 1 of the second unroll and restarted from zero
    assert second["env_done"][1].all()
    h = torch.from_numpy(second["agent/h0"])
    pol = c.policy.policies["agent"]
    with torch.no_grad():
        for t in range(2):
            _, h = pol.step(torch.from_numpy(second["agent/obs"][t]), h)
            h = h * (1.0 - torch.from_numpy(second["env_done"][t]).float())[:, None, None]
    assert not h.any()


@pytest.mark.parametrize("algo,chunk", [("mappo", 0), ("mappo", 5), ("ippo", 2)])
def test_recurrent_update_replays_the_actor_exactly(collect, algo, chunk):
    """The learner replays the GRU from each unroll's stored state (each chunk from the replayed state there):
    with the actor's weights the log-probs equal the actor's, so the first ratio is 1."""
    T = 10
    learner = make_learner(probe_spec("counting_v0", REC_KW, None), algo, T, epochs=1, minibatches=1,
                           recurrent=True, chunk_length=chunk)
    c = collect("counting_v0", T, 2, 3, REC_KW, seed=4, recurrent=True, flat=learner.policy_flat())
    recs = c.records[1:]  # unrolls that start mid-episode with a non-zero hidden state
    assert np.abs(recs[0]["agent/h0"]).sum() > 0
    stats = learner.update(recs)
    assert abs(stats["agent/approx_kl"]) < 1e-6 and stats["agent/clip_fraction"] == 0.0
    # a feed-forward learner on the same data does not reproduce them (the hidden state matters)
    b = learner.batch_from_unrolls(recs)
    zero = {n: torch.zeros_like(h) for n, h in replay_policy(learner.model, b).items()}
    with torch.no_grad():
        d = chunk_dist(learner.model.policies["agent"], b["agent/obs"][:-1], b["agent/action_mask"], zero["agent"][0],
                       b["env_done"])
    assert not torch.allclose(d.log_prob(b["agent/action"]), b["agent/logp"], atol=1e-4)


def test_recurrent_update_moves_every_parameter_and_reduces_once_per_minibatch(collect):
    T, E = 10, 3
    learner = make_learner(probe_spec("counting_v0", REC_KW, None), "mappo", T, epochs=2, minibatches=3,
                           recurrent=True, chunk_length=5)
    c = collect("counting_v0", T, E, 2, REC_KW, seed=5, recurrent=True, flat=learner.policy_flat())
    before = {k: p.detach().clone() for k, p in learner.model.named_parameters()}
    calls = []
    learner.update(c.records, reduce_grads=lambda params, w: calls.append(w))
    assert calls == [float(T * 2 * E)] * (2 * 3)
    assert any(k.startswith("policies.agent.rnn.") for k in before)
    assert all(not torch.equal(before[k], p.detach()) for k, p in learner.model.named_parameters()), \
        [k for k, p in learner.model.named_parameters() if torch.equal(before[k], p.detach())]


def test_recurrent_config_checks():
    from hpcmarl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="algo.chunk_length"):
        load_config(None, ["algo.recurrent=true", "algo.unroll_length=25", "algo.chunk_length=10"])
    cfg = load_config(None, ["algo.recurrent=true", "algo.unroll_length=25", "algo.chunk_length=5"])
    assert cfg.algo.recurrent and cfg.algo.chunk_length == 5


def test_tanh_and_categorical_kernels_agree_with_torch():
    """The models' vectorised tanh and categorical (hpcmarl.models.Tanh, Categorical) equal torch's own within
    float rounding, values and gradients, masked actions included (probability 0, no NaN)."""
    from hpcmarl.models import Categorical, Tanh

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(257, 64, generator=g) * 4).requires_grad_()
    y = Tanh()(x)
    assert torch.allclose(y, torch.tanh(x), atol=2e-7)
    w = torch.randn(257, 64, generator=g)
    (gx,) = torch.autograd.grad((y * w).sum(), x)
    (gt,) = torch.autograd.grad((torch.tanh(x) * w).sum(), x)
    assert torch.allclose(gx, gt, rtol=1e-3, atol=1e-6)  # torch's 1 - y^2 with y near 1 keeps ~3 digits there
    logits = (torch.randn(4, 33, 7, generator=g) * 5).requires_grad_()
    mask = torch.rand(4, 33, 7, generator=g) > 0.4
    mask[..., 0] = True
    masked = logits.masked_fill(~mask, -1e9)
    a = torch.multinomial(torch.softmax(masked.detach(), -1).reshape(-1, 7), 1, generator=g).reshape(4, 33)
    ours, ref = Categorical(masked), torch.distributions.Categorical(logits=masked)
    assert torch.allclose(ours.log_prob(a), ref.log_prob(a), atol=1e-5)
    assert torch.allclose(ours.entropy(), ref.entropy(), atol=1e-5)
    assert torch.allclose(ours.logits, ref.logits, atol=1e-5) and torch.allclose(ours.probs, ref.probs, atol=1e-6)
    assert torch.isfinite(ours.entropy()).all()
    loss = lambda d: (d.log_prob(a) + 0.3 * d.entropy()).sum()
    (g1,) = torch.autograd.grad(loss(Categorical(logits.masked_fill(~mask, -1e9))), logits)
    (g2,) = torch.autograd.grad(loss(torch.distributions.Categorical(logits=logits.masked_fill(~mask, -1e9))), logits)
    assert torch.allclose(g1, g2, atol=1e-5) and (g1[~mask] == 0).all()


def test_inverse_cdf_sampling_draws_the_policy_and_never_a_masked_action(monkeypatch):
    """hpcmarl.models.sample_rows: frequencies of 200k draws match the probabilities (masked actions included, never
    drawn), and the extreme uniform numbers (0 and the largest below 1) still draw an action of probability > 0."""
    from hpcmarl.models import Categorical, sample_rows

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, generator=g) * 2
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    logp = Categorical(logits.masked_fill(~mask, -1e9)).logp_all
    torch.manual_seed(0)
    n = 200_000
    a = sample_rows(logp.repeat_interleave(n, 0)).reshape(3, n)
    freq = torch.stack([torch.bincount(row, minlength=6) for row in a]).double() / n
    p = logp.exp().double()
    assert (freq[~mask] == 0).all()
    assert torch.allclose(freq, p, atol=4 * (p * (1 - p) / n).sqrt().max().item() + 1e-9)
    for u in (0.0, 1.0 - 2 ** -24):  # torch.rand's extremes: the last and the first legal action
        monkeypatch.setattr(torch, "rand", lambda *s, dtype=None, u=u: torch.full(s, u, dtype=dtype))
        drawn = sample_rows(logp).squeeze(1)
        assert mask[torch.arange(3), drawn].all()
        legal = [torch.nonzero(m).flatten() for m in mask]
        assert drawn.tolist() == [int(ix[-1] if u == 0.0 else ix[0]) for ix in legal]


@pytest.mark.parametrize("log_std_init", [-0.5, 0.0, -1.2])
def test_gaussian_heads_start_at_the_configured_std_on_learner_and_actor(log_std_init):
    """algo.log_std_init: every Gaussian head's learned log-std starts there (-0.5, the default, as before the
    option), and it reaches the actor with the weights: the actor's action distribution has that std."""
    from hpcmarl.algos import base as algos

    spec = probe_spec("simple_spread_v3", {"N": 2, "max_cycles": 6, "continuous_actions": True})
    g = spec.groups[0]
    cfg = PPOConfig(hidden=8, log_std_init=log_std_init)
    learner = PPOLearner(spec, cfg, torch.device("cpu"), 0)
    actor = algos.get("mappo").make_inference(spec, cfg)
    actor.load(learner.policy_flat(), 0)
    obs = torch.randn(5, g.n, g.obs_dim)
    for pol in (learner.model.policies[g.name], actor.policies[g.name]):
        scale = pol.dist(obs).base_dist.scale
        assert scale.shape == (5, g.n, g.act_dim)
        assert torch.allclose(scale, torch.full_like(scale, math.exp(log_std_init)))
    assert PPOConfig().log_std_init == -0.5


@pytest.mark.parametrize("recurrent", [False, True])
def test_state_dependent_std_is_the_same_on_actor_and_learner_and_learns(collect, recurrent):
    """algo.state_std: the policy network gives each Gaussian head's std (softplus, starting near
    exp(log_std_init)), so it differs between observations; the actor builds the same network (the first
    minibatch's ratio is 1) and an update moves it."""
    kw = {"N": 2, "max_cycles": 6, "continuous_actions": True}
    spec = probe_spec("simple_spread_v3", kw)
    g = spec.groups[0]
    learner = make_learner(spec, "mappo", 6, epochs=1, minibatches=1, recurrent=recurrent, state_std=True,
                           log_std_init=-1.0)
    assert not any("log_std" in k for k in learner.model.state_dict())
    c = collect("simple_spread_v3", 6, 2, 1, kw, seed=5, flat=learner.policy_flat(), recurrent=recurrent,
                std="state", log_std_init=-1.0)
    obs, h = torch.randn(4, g.n, g.obs_dim), torch.randn(4, g.n, 16)

    def scale(pol):
        return pol.dist(obs, out=pol.step(obs, h)[0] if recurrent else None).base_dist.scale

    first = scale(learner.model.policies[g.name]).detach()
    assert first.shape == (4, g.n, g.act_dim)
    assert torch.equal(scale(c.policy.policies[g.name]), first)
    assert torch.allclose(first, torch.full_like(first, math.exp(-1.0)), rtol=0.05) and first.std() > 0
    stats = learner.update(c.records)
    assert abs(stats[f"{g.name}/approx_kl"]) < 1e-6 and stats[f"{g.name}/clip_fraction"] == 0.0
    assert not torch.equal(scale(learner.model.policies[g.name]), first)


@pytest.mark.parametrize("squash", [False, True])
def test_squash_actions_sends_tanh_of_the_sample_into_the_box(collect, squash):
    """algo.squash_actions: the rollout sampler gives the env low + (tanh(u) + 1) / 2 * (high - low) of the sampled
    u (inside the box however far u is) and records u itself; without it the env gets u unchanged (and clips it)."""
    from hpcmarl.algos import base as algos

    kw = {"N": 2, "max_cycles": 6, "continuous_actions": True}
    c = collect("simple_spread_v3", 6, 2, 0, kw, seed=3, squash=squash)
    assert algos.get("mappo").make_inference(c.venv.spec, PPOConfig(squash_actions=squash)).squashed == squash
    g = c.venv.spec.groups[0]
    sent, step = [], c.venv.step
    c.venv.step = lambda actions: (sent.append(np.array(actions[g.name])), step(actions))[1]
    u = np.array(c.more(1)[0][f"{g.name}/action"])
    got = np.stack(sent)
    assert got.shape == u.shape and np.isfinite(u).all()
    if squash:
        assert np.allclose(got, g.act_low + (np.tanh(u) + 1) / 2 * (g.act_high - g.act_low), atol=1e-6)
        assert ((got >= g.act_low) & (got <= g.act_high)).all()
    else:
        assert np.array_equal(got, u) and (u < g.act_low).any()  # N(0, 0.61) samples below the box's 0


def test_gaussian_head_options_refuse_league_mode():
    from hpcmarl.config import ConfigError, load_config

    for key in ("state_std", "squash_actions"):
        with pytest.raises(ConfigError, match=f"algo.{key}.*league"):
            load_config("configs/league_spread.yaml", [f"algo.{key}=true"])
    cfg = load_config("configs/vmas_navigation_mappo.yaml", ["algo.state_std=true", "algo.squash_actions=true"])
    assert cfg.algo.state_std and cfg.algo.squash_actions


def test_log_std_init_must_be_finite():
    from hpcmarl.config import load_config

    with pytest.raises(ValueError, match="algo.log_std_init.*finite"):
        load_config("configs/vmas_navigation_mappo.yaml", ["algo.log_std_init=1e400"])  # a float: inf


def test_lr_anneal_decays_linearly_with_env_steps_to_zero(collect):
    T, E = 5, 2
    learner = make_learner(probe_spec("simple_spread_v3", {"N": 2, "max_cycles": 6}), T=T, lr=1e-3,
                           lr_anneal_steps=1000)
    c = collect("simple_spread_v3", T, E, 1, {"N": 2, "max_cycles": 6}, seed=3, flat=learner.policy_flat())
    lrs = []
    for steps in (0, 250, 1000, 5000):
        before = learner.policy_flat()
        learner.update(c.records, env_steps=steps)
        lrs.append(learner.opt.param_groups[0]["lr"])
        assert np.array_equal(before, learner.policy_flat()) == (steps >= 1000)  # at lr 0 nothing moves
    assert lrs == pytest.approx([1e-3, 7.5e-4, 0.0, 0.0])


def test_lr_anneal_must_cover_the_run():
    from hpcmarl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="algo.lr_anneal_steps.*learning rate 0"):
        load_config(None, ["train.total_env_steps=2000", "algo.lr_anneal_steps=1000"])
    assert load_config(None, ["train.total_env_steps=2000", "algo.lr_anneal_steps=2000"]).algo.lr_anneal_steps == 2000


@pytest.mark.parametrize("recurrent", [False, True])
def test_relu_networks_act_the_same_on_actor_and_learner(collect, recurrent):
    """algo.activation=relu: the learner's policy and critic are ReLU networks (the written-out tanh step stands
    aside), the actor builds the same ones (first minibatch's ratio 1); a tanh actor on the same weights differs."""
    from hpcmarl.models import ACTIVATIONS

    kw = {"N": 2, "max_cycles": 6}
    learner = make_learner(probe_spec("simple_spread_v3", kw), "mappo", 6, epochs=1, minibatches=1, recurrent=recurrent,
                           activation="relu")
    kinds = {type(m) for m in learner.model.modules()}
    assert ACTIVATIONS["relu"] in kinds and ACTIVATIONS["tanh"] not in kinds and not learner.fused
    c = collect("simple_spread_v3", 6, 2, 1, kw, seed=5, flat=learner.policy_flat(), recurrent=recurrent,
                activation="relu")
    obs = torch.randn(3, 2, learner.spec.groups[0].obs_dim)
    h = torch.randn(3, 2, 16)
    for act in ("relu", "tanh"):  # the actor's network on the learner's weights: the same function only as ReLU
        pol, mine = collect("simple_spread_v3", 1, 1, 0, kw, flat=learner.policy_flat(), recurrent=recurrent,
                            activation=act).policy.policies["agent"], learner.model.policies["agent"]
        outs = [p.step(obs, h)[0] if recurrent else p.net(obs) for p in (pol, mine)]
        assert torch.allclose(*outs) == (act == "relu"), act
    stats = learner.update(c.records)
    assert abs(stats["agent/approx_kl"]) < 1e-6 and stats["agent/clip_fraction"] == 0.0


def test_activation_config_checks():
    from hpcmarl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="algo.activation"):
        load_config(None, ["algo.activation=gelu"])
    with pytest.raises(ConfigError, match="algo.activation.*league"):
        load_config("configs/league_spread.yaml", ["algo.activation=relu"])
    assert load_config("configs/simple_spread_mappo.yaml", ["algo.activation=relu"]).algo.activation == "relu"


@pytest.mark.parametrize("new_p,clipped", [(1.0, True), (0.84, False), (0.5, False)])
def test_decoupled_clip_clips_around_the_proximal_policy(new_p, clipped):
    """Decoupled PPO: behaviour probability 0.5, proximal 0.8, A = 1, clip 0.2. The clip applies to new / proximal
    (1.25 at new 1.0: clipped, no gradient; 1.05 at 0.84: inside; 0.625 at 0.5: below, where the unclipped term is
    the smaller: both give the gradient of new / behaviour * A), the clipped term is weighted by proximal /
    behaviour (1.6); plain PPO clips around the behaviour policy."""
    clip, adv = 0.2, 1.0
    old, prox = torch.tensor([math.log(0.5)], dtype=torch.float64), torch.tensor([math.log(0.8)], dtype=torch.float64)
    new_logp = torch.tensor([math.log(new_p)], dtype=torch.float64, requires_grad=True)
    z, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    loss, stats = ppo_loss(new_logp, old, adv * one, z, z, z, z, one, clip, 0.0, 0.0, 1.0, prox_logp=prox)
    loss.backward()
    r, q = new_p / 0.5, new_p / 0.8
    assert loss.item() == pytest.approx(-min(r, min(max(q, 1 - clip), 1 + clip) * 1.6) * adv)
    assert new_logp.grad.item() == (0.0 if clipped else pytest.approx(-r * adv))
    assert stats["clip_fraction"] == (1.0 if abs(q - 1) > clip else 0.0)
    assert stats["approx_kl"] == pytest.approx((q - 1) - math.log(q))
    plain, plain_stats = ppo_loss(new_logp, old, adv * one, z, z, z, z, one, clip, 0.0, 0.0, 1.0)
    assert plain_stats["clip_fraction"] == (1.0 if abs(r - 1) > clip else 0.0)


@pytest.mark.parametrize("env,kwargs", [("simple_spread_v3", {"N": 2, "max_cycles": 6}),
                                        ("simple_spread_v3", {"N": 2, "max_cycles": 6, "continuous_actions": True}),
                                        ("counting_v0", {"n_agents": 2, "max_cycles": 4, "die_at": 2})],
                         ids=["discrete", "continuous", "deaths"])
def test_decoupled_clip_removes_the_lags_clipping_and_is_ppo_without_lag(collect, env, kwargs):
    """Unrolls of an older policy (the lag of actors.overlap): plain PPO clips some rows before its first step,
    decoupled PPO none (its proximal policy is the learner's own). Unrolls of the current policy (synchronous): the
    two objectives give the same update."""
    spec = probe_spec(env, kwargs)
    kw = dict(epochs=1, minibatches=1, clip=0.1)
    base = make_learner(spec, "mappo", 6).policy_flat()
    older = base + 0.5 * np.random.default_rng(0).standard_normal(base.shape).astype(base.dtype)  # another policy
    for flat, lagged in ((older, True), (None, False)):
        runs = []
        for decoupled in (False, True):
            learner = make_learner(spec, "mappo", 6, decoupled_clip=decoupled, **kw)
            c = collect(env, 6, 2, 1, kwargs, seed=3, flat=learner.policy_flat() if flat is None else flat)
            runs.append((learner.update(c.records), learner.policy_flat()))
        (plain, plain_after), (dec, dec_after) = runs
        for g in spec.groups:
            if lagged:
                assert plain[f"{g.name}/clip_fraction"] > 0.1
                assert dec[f"{g.name}/clip_fraction"] == 0.0 and abs(dec[f"{g.name}/approx_kl"]) < 1e-6
            else:
                assert dec[f"{g.name}/clip_fraction"] == plain[f"{g.name}/clip_fraction"] == 0.0
        if lagged:
            assert not np.allclose(plain_after, dec_after, rtol=0, atol=1e-6)
        else:
            np.testing.assert_allclose(dec_after, plain_after, rtol=0, atol=1e-6)


def test_decoupled_clip_config_checks():
    from hpcmarl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="algo.decoupled_clip"):
        load_config(None, ["algo.recurrent=true", "algo.decoupled_clip=true"])
    assert load_config(None, ["algo.decoupled_clip=true", "actors.overlap=true"]).algo.decoupled_clip
