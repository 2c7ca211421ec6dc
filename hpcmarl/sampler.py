"""Actor-side compute: step the vectorised env with the policy and fill unroll records (no MPI)."""
from __future__ import annotations

import time

import numpy as np
import torch

from hpcmarl.envs import VecEnv
from hpcmarl.models import Inference
from hpcmarl.spec import META_INDEX, Record, RecordSpec


class Sampler:
    def __init__(self, venv: VecEnv, policy: Inference, spec: RecordSpec, T: int):
        self.venv, self.policy, self.spec, self.T = venv, policy, spec, T
        self.groups = venv.spec.groups
        venv.reset()

    def collect(self, rec: Record) -> Record:
        """Fill ``rec`` with T steps of every env copy using the policy's current weights."""
        venv, T = self.venv, self.T
        t0 = time.perf_counter()
        n_ep = 0
        eps = rec["episodes"]
        env_done = rec["env_done"]
        env_done[:] = 0
        t_env = t_infer = 0.0
        clock = time.perf_counter
        for t in range(T):
            for g in self.groups:
                rec[f"{g.name}/obs"][t] = venv.obs[g.name]
                rec[f"{g.name}/alive"][t] = venv.alive[g.name]
                if g.discrete:
                    rec[f"{g.name}/action_mask"][t] = venv.action_mask[g.name]
            if venv.state is not None:
                rec["state"][t] = venv.state
            c0 = clock()
            actions, logps = self.policy.act(venv.obs, venv.action_mask)
            c1 = clock()
            rew, term, trunc, finished = venv.step(actions)
            t_infer += c1 - c0
            t_env += clock() - c1
            for g in self.groups:
                n = g.name
                rec[f"{n}/action"][t] = actions[n]
                rec[f"{n}/logp"][t] = logps[n]
                rec[f"{n}/reward"][t] = rew[n]
                rec[f"{n}/terminated"][t] = term[n]
                rec[f"{n}/truncated"][t] = trunc[n]
            for ep in finished:
                env_done[t, ep.env] = 1
                eps[n_ep, 0] = ep.env
                eps[n_ep, 1] = ep.length
                eps[n_ep, 2:] = [ep.returns[g.name] for g in self.groups]
                n_ep += 1
        for g in self.groups:
            rec[f"{g.name}/obs"][T] = venv.obs[g.name]
            rec[f"{g.name}/alive"][T] = venv.alive[g.name]
        if venv.state is not None:
            rec["state"][T] = venv.state
        m = rec["meta"]
        m[META_INDEX["version"]] = self.policy.version
        m[META_INDEX["n_episodes"]] = n_ep
        m[META_INDEX["env_steps"]] = T * venv.num_envs
        m[META_INDEX["param_checksum"]] = self.policy.checksum
        rec["rng"][:] = torch.get_rng_state().numpy()
        m[META_INDEX["t_collect"]] = time.perf_counter() - t0
        m[META_INDEX["t_env"]] = t_env
        m[META_INDEX["t_infer"]] = t_infer
        return rec

    def in_flight(self) -> np.ndarray:
        """Length so far of each env copy's unfinished episode (discarded if the run stops now)."""
        return self.venv._ep_len.copy()
