"""Recurrent PPO on the learner: the GRUs replayed over an update's unrolls.

The policy's GRU (``algo.recurrent``) starts each unroll from the hidden state its actor stored in the unroll. The
recurrent critic's (``algo.critic_recurrent``) is not run by the actors: :class:`CriticCarry` keeps, per actor and
env copy, its hidden state at the end of that actor's previous unroll (one actor's unrolls reach its learner in
order), and the replay starts there. A finished episode restarts both from zero, as on the actor.
"""
from typing import Dict, List, Tuple

import torch

from hpcmarl.comm.spec import META_INDEX
from hpcmarl.models import joint_input

Stream = Tuple[int, int]  # (actor index, place among that actor's unrolls in one batch)


def scan(step, xs: torch.Tensor, h: torch.Tensor, env_done: torch.Tensor):
    """``step(x, h) -> (out, next h)`` over ``xs [L, ...]`` from ``h``, restarting from zero where an episode ended
    (``env_done [L, M]``): the outputs ``[L, ...]`` and the hidden state before every step ``[L, ...]``."""
    outs, hs = [], []
    for t in range(xs.shape[0]):
        hs.append(h)
        out, h = step(xs[t], h)
        outs.append(out)
        h = h * (1.0 - env_done[t]).view(-1, *[1] * (h.dim() - 1))
    return torch.stack(outs), torch.stack(hs)


@torch.no_grad()
def replay_policy(model, b: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The policy's hidden state before every step ``[T, B, n, H]``, replayed from each unroll's stored initial
    state with the weights that made the unroll (the learner's, before this update)."""
    T = b["env_done"].shape[0]
    return {n: scan(pol.step, b[f"{n}/obs"][:T], b[f"{n}/h0"], b["env_done"])[1] for n, pol in model.policies.items()}


def chunk_dist(pol, obs: torch.Tensor, mask, h: torch.Tensor, env_done: torch.Tensor):
    """The action distribution over chunks: ``obs [L, M, n, d]`` from hidden states ``h [M, n, H]``,
    backpropagating through the L steps."""
    return pol.dist(obs, mask, out=scan(pol.step, obs, h, env_done)[0])


def chunk_values(critic, x: torch.Tensor, h: torch.Tensor, env_done: torch.Tensor) -> torch.Tensor:
    """A recurrent critic's values ``[L, M, n]`` over chunks of joint inputs ``x [L, M, D]`` from hidden states
    ``h [M, H]``, backpropagating through the L steps."""
    return scan(critic.step, x, h, env_done)[0]


@torch.no_grad()
def replay_critic(model, b: Dict[str, torch.Tensor], bootstrap_truncated: bool):
    """The recurrent critics over the unrolls from ``b["<group>/critic_h0"]`` ``[B, H]``: per group the values
    ``[T+1, B, n]``, those of truncated episodes' final observations ``[T, B, n]`` (or None), and the hidden state
    before every step ``[T+1, B, H]`` (its last row: where the next unroll of the same env copy starts)."""
    spec = model.spec
    T = b["env_done"].shape[0]
    x = joint_input(spec, {g.name: b[f"{g.name}/obs"] for g in spec.groups}, b.get("state"))
    xf = joint_input(spec, {g.name: b[f"{g.name}/final_obs"] for g in spec.groups}, b.get("final_state")) \
        if bootstrap_truncated else None
    values, finals, starts = {}, ({} if xf is not None else None), {}
    for n, critic in model.critics.items():
        h, vs, fs, hs = b[f"{n}/critic_h0"], [], [], []
        for t in range(T + 1):
            hs.append(h)
            v, h = critic.step(x[t], h)
            vs.append(v)
            if t < T:
                if xf is not None:  # the episode's next observation, from the state after this step
                    fs.append(critic.step(xf[t], h)[0])
                h = h * (1.0 - b["env_done"][t])[:, None]
        values[n], starts[n] = torch.stack(vs), torch.stack(hs)
        if finals is not None:
            finals[n] = torch.stack(fs)
    return values, finals, starts


class CriticCarry:
    """The recurrent critic's hidden state ``[E, H]`` per group at the end of each actor's last unroll.

    The synchronous flow hands an update one unroll per actor; were there several of one actor in a batch (the
    sizing profile's timing runs), each would continue its own stream (key: actor, its place among that actor's
    unrolls in the batch), not the one before it in the batch. Not checkpointed: a resumed run's actors restart
    their env copies' episodes (their policies' hidden state from zero), so the critic starts from zero too."""

    def __init__(self, groups: List[str], hidden: int, device):
        self.groups, self.hidden, self.device = groups, hidden, device
        self.h: Dict[Tuple[Stream, str], torch.Tensor] = {}

    @staticmethod
    def sources(unrolls) -> List[Tuple[Stream, int]]:
        """((actor, place), env copies) of each unroll, in batch order."""
        out, seen = [], {}
        for u in unrolls:
            a = int(u["meta"][META_INDEX["actor"]])
            seen[a] = seen.get(a, -1) + 1
            out.append(((a, seen[a]), u["env_done"].shape[1]))
        return out

    def starts(self, sources: List[Tuple[Stream, int]]) -> Dict[str, torch.Tensor]:
        """Each group's hidden state ``[B, H]`` at the start of the unrolls (zeros for an actor's first)."""
        def start(key: Stream, n: str, E: int) -> torch.Tensor:
            h = self.h.get((key, n))
            if h is None:
                return torch.zeros(E, self.hidden, device=self.device)
            if h.shape[0] != E:
                raise ValueError(f"the recurrent critic's state of actor stream {key} has {h.shape[0]} env copies, "
                                 f"its unroll {E}: one actor's unrolls must keep their width")
            return h
        return {n: torch.cat([start(key, n, E) for key, E in sources]) for n in self.groups}

    def keep(self, sources: List[Tuple[Stream, int]], ends: Dict[str, torch.Tensor]) -> None:
        """Remember each unroll's end ``ends[group] [B, H]`` for its actor's next unroll."""
        for n in self.groups:
            for (a, _), h in zip(sources, ends[n].split([E for _, E in sources])):
                self.h[(a, n)] = h.clone()
