"""Recurrent PPO on the learner: the GRUs replayed over an update's unrolls.

The policy's GRU (``algo.recurrent``) starts each unroll from the hidden state its actor stored in the unroll. The
recurrent critic's (``algo.critic_recurrent``) is not run by the actors: :class:`CriticCarry` keeps, per actor and
env copy, its hidden state at the end of that actor's previous unroll (one actor's unrolls reach its learner in
order), and the replay starts there. A finished episode restarts both from zero, as on the actor.
"""
from typing import Dict, List, Tuple

import numpy as np
import torch

from hpcmarl.comm.spec import META_INDEX
from hpcmarl.models import joint_input


@torch.no_grad()
def replay_policy(model, b: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The policy's hidden state before every step ``[T, B, n, H]``, replayed from each unroll's stored initial
    state with the weights that made the unroll (the learner's, before this update)."""
    out = {}
    for n, pol in model.policies.items():
        h, hs = b[f"{n}/h0"], []
        for t in range(b[f"{n}/reward"].shape[0]):
            hs.append(h)
            _, h = pol.step(b[f"{n}/obs"][t], h)
            h = h * (1.0 - b["env_done"][t])[:, None, None]
        out[n] = torch.stack(hs)
    return out


def chunk_dist(pol, obs: torch.Tensor, mask, h: torch.Tensor, env_done: torch.Tensor):
    """The action distribution over chunks: ``obs [L, M, n, d]`` from hidden states ``h [M, n, H]``,
    backpropagating through the L steps."""
    outs = []
    for t in range(obs.shape[0]):
        out, h = pol.step(obs[t], h)
        outs.append(out)
        h = h * (1.0 - env_done[t])[:, None, None]
    return pol.dist(obs, mask, out=torch.stack(outs))


def chunk_values(critic, x: torch.Tensor, h: torch.Tensor, env_done: torch.Tensor) -> torch.Tensor:
    """A recurrent critic's values ``[L, M, n]`` over chunks of joint inputs ``x [L, M, D]`` from hidden states
    ``h [M, H]``, backpropagating through the L steps."""
    outs = []
    for t in range(x.shape[0]):
        v, h = critic.step(x[t], h)
        outs.append(v)
        h = h * (1.0 - env_done[t])[:, None]
    return torch.stack(outs)


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
    values, finals, starts = {}, {}, {}
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
        finals[n] = torch.stack(fs) if xf is not None else None
    return values, (finals if xf is not None else None), starts


class CriticCarry:
    """The recurrent critic's hidden state ``[E, H]`` per group at the end of each actor's last unroll."""

    PREFIX = "local/critic_h/"  # checkpoint keys local/critic_h/<actor>/<group>: each learner keeps its own actors'

    def __init__(self, groups: List[str], hidden: int, device):
        self.groups, self.hidden, self.device = groups, hidden, device
        self.h: Dict[Tuple[int, str], torch.Tensor] = {}

    @staticmethod
    def sources(unrolls) -> List[Tuple[int, int]]:
        """(actor index, env copies) of each unroll, in batch order."""
        return [(int(u["meta"][META_INDEX["actor"]]), u["env_done"].shape[1]) for u in unrolls]

    def starts(self, sources: List[Tuple[int, int]]) -> Dict[str, torch.Tensor]:
        """Each group's hidden state ``[B, H]`` at the start of the unrolls (zeros for an actor's first)."""
        zeros = lambda E: torch.zeros(E, self.hidden, device=self.device)
        return {n: torch.cat([self.h.get((a, n), zeros(E)) for a, E in sources]) for n in self.groups}

    def keep(self, sources: List[Tuple[int, int]], ends: Dict[str, torch.Tensor]) -> None:
        """Remember each unroll's end ``ends[group] [B, H]`` for its actor's next unroll."""
        for n in self.groups:
            for (a, _), h in zip(sources, ends[n].split([E for _, E in sources])):
                self.h[(a, n)] = h.clone()

    def state_arrays(self) -> Dict[str, np.ndarray]:
        return {f"{self.PREFIX}{a}/{n}": h.cpu().numpy().copy() for (a, n), h in self.h.items()}

    def load_state_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        self.h = {}
        for k, v in arrays.items():
            if k.startswith(self.PREFIX):
                a, n = k[len(self.PREFIX):].split("/", 1)
                if n not in self.groups or np.shape(v)[-1:] != (self.hidden,):
                    raise ValueError(f"checkpoint array {k} of shape {np.shape(v)} does not fit this recurrent "
                                     f"critic (groups {self.groups}, hidden {self.hidden})")
                self.h[(int(a), n)] = torch.as_tensor(np.array(v, np.float32), device=self.device)
