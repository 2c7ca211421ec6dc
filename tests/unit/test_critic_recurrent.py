"""MAPPO's recurrent critic (``algo.critic_recurrent``): the learner replays its GRU over each unroll from the state
it carried over from the same actor's previous unroll and keeps that state per actor (not in checkpoints)."""
from __future__ import annotations

import pytest
import torch

from hpcmarl.algos.ppo import PPOConfig, PPOLearner
from hpcmarl.algos.ppo_recurrent import CriticCarry, replay_critic
from hpcmarl.comm.spec import META_INDEX
from hpcmarl.envs import probe_spec
from hpcmarl.storage import load_checkpoint, save_checkpoint

KW = {"n_agents": 2, "max_cycles": 7, "die_at": 5}  # episodes end inside and across unrolls
T, E = 5, 3


def learner(seed=0, **kw):
    cfg = PPOConfig(name="mappo", unroll_length=T, hidden=16, layers=2, recurrent=True, critic_recurrent=True, **kw)
    return PPOLearner(probe_spec("counting_v0", KW, None), cfg, torch.device("cpu"), seed)


def from_actor(rec, actor: int):
    rec["meta"][META_INDEX["actor"]] = actor
    return rec


def test_the_carried_state_continues_the_replay_of_the_unroll_before(collect):
    """Replaying two consecutive unrolls one at a time, the second from the state the carry kept after the first,
    gives the values of one replay over both unrolls' steps from zero."""
    lr = learner()
    c = collect("counting_v0", T, E, 2, KW, seed=3, hidden=16, layers=2, recurrent=True, flat=lr.policy_flat())
    r1, r2 = c.records
    b1, b2 = lr.batch_from_unrolls([r1]), lr.batch_from_unrolls([r2])
    assert torch.equal(b1["agent/obs"][T], b2["agent/obs"][0])  # the bootstrap step is the next unroll's first
    carry = CriticCarry(["agent"], 16, torch.device("cpu"))
    src = CriticCarry.sources([r1])
    b1["agent/critic_h0"] = carry.starts(src)["agent"]
    assert not b1["agent/critic_h0"].any()  # an actor's first unroll starts from zero
    v1, _, h1 = replay_critic(lr.model, b1, False)
    carry.keep(src, {"agent": h1["agent"][T]})
    b2["agent/critic_h0"] = carry.starts(src)["agent"]
    assert b2["agent/critic_h0"].abs().sum() > 0
    v2, _, _ = replay_critic(lr.model, b2, False)

    both = {k: torch.cat([b1[k][:T], b2[k]]) for k in ("agent/obs", "env_done")}
    both["agent/critic_h0"] = torch.zeros_like(b1["agent/critic_h0"])
    v, _, _ = replay_critic(lr.model, both, False)
    torch.testing.assert_close(v["agent"][:T], v1["agent"][:T])
    torch.testing.assert_close(v["agent"][T:], v2["agent"])
    # without the carried state the second unroll's values differ (the state matters)
    b2["agent/critic_h0"] = torch.zeros_like(b2["agent/critic_h0"])
    v0, _, _ = replay_critic(lr.model, b2, False)
    assert not torch.allclose(v0["agent"], v2["agent"], atol=1e-4)


def test_update_keeps_each_actors_state_and_moves_every_parameter(collect):
    lr = learner(epochs=2, minibatches=3, chunk_length=5)
    ca = collect("counting_v0", T, E, 1, KW, seed=4, hidden=16, layers=2, recurrent=True, flat=lr.policy_flat())
    cb = collect("counting_v0", T, 2, 1, KW, seed=5, hidden=16, layers=2, recurrent=True, flat=lr.policy_flat())
    batch = [from_actor(ca.records[0], 3), from_actor(cb.records[0], 7)]
    b = lr.batch_from_unrolls(batch)
    b["agent/critic_h0"] = torch.zeros(E + 2, 16)
    _, _, before_update = replay_critic(lr.model, b, lr.cfg.bootstrap_truncated)  # the update replays these weights
    params = {k: p.detach().clone() for k, p in lr.model.named_parameters()}
    lr.update(batch)
    assert any(k.startswith("critics.agent.rnn.") for k in params)
    assert all(not torch.equal(params[k], p.detach()) for k, p in lr.model.named_parameters()), \
        [k for k, p in lr.model.named_parameters() if torch.equal(params[k], p.detach())]
    end = before_update["agent"][T]
    torch.testing.assert_close(lr.critic_carry.h[((3, 0), "agent")], end[:E])
    torch.testing.assert_close(lr.critic_carry.h[((7, 0), "agent")], end[E:])
    # the next batch, actors in the other order: each unroll starts where its own actor's ended
    starts = lr.critic_carry.starts([((7, 0), 2), ((3, 0), E)])["agent"]
    torch.testing.assert_close(starts, torch.cat([end[E:], end[:E]]))


def test_a_resumed_learner_starts_the_critic_from_zero(collect, tmp_path):
    """Resumed actors restart their env copies' episodes (policies from zero): the carried state is not in the
    checkpoint, and the restored learner's critic starts each actor's next unroll from zero."""
    lr = learner()
    c = collect("counting_v0", T, E, 1, KW, seed=6, hidden=16, layers=2, recurrent=True, flat=lr.policy_flat())
    lr.update([from_actor(c.records[0], 2)])
    assert lr.critic_carry.starts([((2, 0), E)])["agent"].abs().sum() > 0
    with pytest.raises(ValueError, match="must keep their width"):
        lr.critic_carry.starts([((2, 0), E + 1)])
    save_checkpoint(str(tmp_path), 1, lr.state_arrays(), {"update": 1}, keep=2)
    arrays = load_checkpoint(str(tmp_path / "ckpt-000000001.h5"))[0]
    assert any(k.startswith("model/critics.agent.rnn.") for k in arrays)
    restored = learner(seed=9)
    restored.load_state_arrays(arrays)
    assert not restored.critic_carry.starts([((2, 0), E)])["agent"].any()
    for k, p in lr.model.state_dict().items():
        assert torch.equal(p, restored.model.state_dict()[k])


def test_recurrent_critic_config_checks():
    from hpcmarl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="algo.critic_recurrent.*algo.recurrent"):
        load_config(None, ["algo.name=mappo", "algo.critic_recurrent=true"])
    with pytest.raises(ConfigError, match="algo.critic_recurrent.*centralized"):
        load_config(None, ["algo.name=ippo", "algo.recurrent=true", "algo.critic_recurrent=true"])
    cfg = load_config(None, ["algo.name=mappo", "algo.recurrent=true", "algo.critic_recurrent=true"])
    assert cfg.algo.critic_recurrent
