"""Shared helpers for the unit tests: build a real Sampler and collect unroll records."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import pytest
import torch

import hpcmarl.testing  # noqa: F401  (registers the test envs; scripts outside pytest import this module too)
from hpcmarl.comm.spec import Record, RecordSpec, unroll_spec
from hpcmarl.envs import VecEnv
from hpcmarl.models import Inference
from hpcmarl.sampler import Sampler


@dataclass
class Collected:
    venv: VecEnv
    policy: Inference
    spec: RecordSpec
    sampler: Sampler
    records: List[Record]

    def more(self, n: int = 1) -> List[Record]:
        recs = [self.sampler.collect(self.spec.alloc()) for _ in range(n)]
        self.records += recs
        return recs


def make_collected(env: str, T: int, E: int, n_unrolls: int = 1, kwargs: Optional[dict] = None, seed: int = 0,
                   hidden: int = 16, layers: int = 1, policy_map=None, flat=None, version: int = 0,
                   recurrent: bool = False, agent_id: bool = False, activation: str = "tanh", std: str = "log",
                   log_std_init: float = -0.5, squash: bool = False) -> Collected:
    torch.manual_seed(seed)
    venv = VecEnv(env, E, seed, kwargs, policy_map)
    policy = Inference(venv.spec, hidden, layers, std, recurrent=recurrent, agent_id=agent_id, activation=activation,
                       log_std_init=log_std_init, squash=squash)
    if flat is not None:
        policy.load(flat, version)
    spec = unroll_spec(venv.spec, T, E, hidden if recurrent else 0)
    sampler = Sampler(venv, policy, spec, T)
    c = Collected(venv, policy, spec, sampler, [])
    c.more(n_unrolls)
    return c


@pytest.fixture
def collect():
    """``collect(env, T, E, n_unrolls=1, kwargs=None, ...)`` -> :class:`Collected`."""
    made = []

    def _collect(*args, **kwargs):
        c = make_collected(*args, **kwargs)
        made.append(c)
        return c

    yield _collect
    for c in made:
        c.venv.close()
