"""Fixed-shape message records: one spec object, built from the config on both sides of a message.

A :class:`RecordSpec` lists named fields (shape, dtype); :meth:`RecordSpec.alloc` returns a
:class:`Record` whose fields are NumPy views into one contiguous byte buffer, so a whole record
travels as one buffer message (``comm.Isend([rec.buf, MPI.BYTE], ...)``; over 1 GiB in chunks,
:func:`hpcmarl.comm.protocol.post_buffer`) and shapes cannot drift.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from hpcmarl.envs import EnvSpec

_ALIGN = 8


class RecordSpec:
    def __init__(self, fields: List[Tuple[str, tuple, str]]):
        self.fields = []
        offset = 0
        for name, shape, dtype in fields:
            dt = np.dtype(dtype)
            shape = tuple(int(s) for s in shape)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            self.fields.append((name, shape, dt, offset, nbytes))
            offset += -(-nbytes // _ALIGN) * _ALIGN
        self.nbytes = max(offset, _ALIGN)
        self.names = [f[0] for f in self.fields]

    def alloc(self) -> "Record":
        return Record(self, np.zeros(self.nbytes, np.uint8))

    def shapes(self) -> Dict[str, tuple]:
        return {name: shape for name, shape, *_ in self.fields}


class Record:
    """Named NumPy views over one byte buffer (``rec.buf``); ``rec["name"]`` or ``rec.name``."""

    def __init__(self, spec: RecordSpec, buf: np.ndarray):
        assert buf.dtype == np.uint8 and buf.size == spec.nbytes
        self.spec = spec
        self.buf = buf
        self.views = {name: buf[off:off + nb].view(dt).reshape(shape) for name, shape, dt, off, nb in spec.fields}

    def __getitem__(self, name) -> np.ndarray:
        return self.views[name]

    def copy(self) -> "Record":
        return Record(self.spec, self.buf.copy())


# header slots of an unroll (float64)
RNG_BYTES = 5056  # torch.get_rng_state().numel() for the CPU generator
META = ["version", "actor", "n_episodes", "env_steps", "param_checksum", "discarded_episodes", "t_collect", "t_wait",
        "stop_requested", "t_env", "t_infer", "t_send", "env_errors"]  # env_errors: env copies re-created in the unroll
META_INDEX = {k: i for i, k in enumerate(META)}


# a row of an unroll's ``episodes``: these columns, then the return of each env group (EnvSpec.groups' order), then
# whether the episode was won (EpisodeStat.won: 1, 0, or nan where the env does not say)
EPISODE = ["env", "length"]
EPISODE_INDEX = {k: i for i, k in enumerate(EPISODE)}
EPISODE_RETURNS = slice(len(EPISODE), -1)
EPISODE_WON = -1


def unroll_spec(env: EnvSpec, T: int, E: int, rnn_hidden: int = 0, parts: int = 1) -> RecordSpec:
    """What an actor sends per unroll: T steps of E env copies, plus the bootstrap observation (and with
    ``rnn_hidden`` > 0 the recurrent policy's hidden state at the unroll's start); ``parts``: ``env.parts``."""
    fields = [("meta", (len(META),), "f8")]
    for g in env.groups:
        n = g.n
        fields += [
            (f"{g.name}/obs", (T + 1, E, n, g.obs_dim), "f4"),
            (f"{g.name}/alive", (T + 1, E, n), "u1"),
            (f"{g.name}/action", (T, E, n) + g.action_shape, "i8" if g.discrete else "f4"),
            (f"{g.name}/logp", (T, E, n), "f4"),
            (f"{g.name}/reward", (T, E, n), "f4"),
            (f"{g.name}/terminated", (T, E, n), "u1"),
            (f"{g.name}/truncated", (T, E, n), "u1"),
            # observation after a truncating step t (the env was reset, so obs[t+1] is the next episode's)
            (f"{g.name}/final_obs", (T, E, n, g.obs_dim), "f4"),
        ]
        if g.discrete:
            fields.append((f"{g.name}/action_mask", (T, E, n, g.n_actions), "u1"))
        if rnn_hidden:
            fields.append((f"{g.name}/h0", (E, n, rnn_hidden), "f4"))
    if env.state_dim:
        fields += [("state", (T + 1, E, env.state_dim), "f4"), ("final_state", (T, E, env.state_dim), "f4")]
    fields.append(("env_done", (T, E), "u1"))  # the env copy's episode ended at step t (then it was reset)
    fields.append(("rng", (RNG_BYTES,), "u1"))  # the actor's torch RNG state after the unroll
    # BatchedEnv.seeds_state: episode seeds, stream seed, reset counter (of each part)
    fields.append(("env_seeds", (E + 1 + parts,), "i8"))
    # finished episodes (EPISODE); at most one per env copy and step
    fields.append(("episodes", (T * E, len(EPISODE) + len(env.groups) + 1), "f8"))
    return RecordSpec(fields)


# quota: gradients per actor this round (gradient flow; 0 = no limit); epsilon: exploration of value-based
# policies; mask_version: sparse policies, the version of the masks the active values belong to
WEIGHT_META = ["version", "command", "quota", "epsilon", "mask_version"]
WEIGHT_INDEX = {k: i for i, k in enumerate(WEIGHT_META)}
CMD_RUN, CMD_STOP, CMD_PREEMPTED = 0, 1, 2  # PREEMPTED: stop, the run is not finished


def weights_spec(n_params: int) -> RecordSpec:
    """What a learner sends its actors: the policy version, a command and the flat policy parameters."""
    return RecordSpec([("meta", (len(WEIGHT_META),), "f8"), ("params", (n_params,), "f4")])


# header slots of a gradient message (float64), followed by one return per group
GRAD_META = ["round", "actor", "env_steps", "length", "abandoned", "t_traj", "stop_requested", "env_errors"]
GRAD_INDEX = {k: i for i, k in enumerate(GRAD_META)}


def gradient_spec(n_params: int, n_groups: int) -> RecordSpec:
    """What an actor sends per finished trajectory in the gradient flow: the round it was computed for,
    bookkeeping (env steps since its previous message, abandoned trajectories, returns per group) and
    the flat policy gradient ``g_H(tau, x)``."""
    return RecordSpec([("meta", (len(GRAD_META) + n_groups,), "f8"), ("grad", (n_params,), "f4")])
