#!/usr/bin/env python
"""OpenSpiel's own learner on Kuhn and Leduc poker: its PyTorch NFSP (Heinrich & Silver 2016), as in OpenSpiel's
``examples/nfsp_{kuhn,leduc}_pytorch.py``, scored by exact NashConv of its average policy at env-step budgets.

The reference row of ``tools/bench_exploitability.py --openspiel``. Hyperparameters are those of OpenSpiel's
examples (one hidden layer of 128, replay 2e5, reservoir 2e6, anticipatory 0.1, SGD 0.01, batch 128, learn every
64 steps, epsilon 0.06 -> 0.001) except that epsilon decays over the budget (the examples decay it over their own
training length). One env step is one decision of a learning agent: both players learn, so every move counts (an
hpcmarl league run counts only its trained seat's moves; its opponents' moves are free).

OpenSpiel's PyTorch NFSP imports ``tree`` (``pip install dm-tree``; the ``reference`` extra of setup.py).

    .venv/bin/python tools/reference/openspiel_nfsp.py --game kuhn_poker --seed 1000 --budgets 250k,1m
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def average_policy(meter, agents) -> np.ndarray:
    """``[S, A]``: the agents' average-policy networks' action probabilities at every information state of
    ``meter`` (a :class:`hpcmarl.league.exploitability.NashConv`), as NFSP acts (illegal actions masked)."""
    import torch
    from open_spiel.python.pytorch import dqn

    player = np.array([s.current_player() for s in meter.table.states])
    out = np.zeros(meter.mask.shape)
    with torch.no_grad():
        for p, agent in enumerate(agents):
            rows = player == p
            logits = agent._avg_network(torch.from_numpy(meter.obs[rows]))
            mask = torch.from_numpy(meter.mask[rows])
            logits = torch.where(mask, logits, torch.full_like(logits, dqn.ILLEGAL_ACTION_LOGITS_PENALTY))
            out[rows] = torch.softmax(logits, -1).double().numpy()
    out = np.where(meter.mask, out, 0.0)
    return out / out.sum(1, keepdims=True)


def train(game: str, seed: int, budgets, meter, progress=print) -> dict:
    """Train NFSP on ``game`` to ``max(budgets)`` env steps; ``{budget: {"latest": NashConv of the average
    policy, "env_steps": the env steps when it was measured (the first episode end at or past the budget)}}``."""
    import torch

    try:
        from open_spiel.python import rl_environment
        from open_spiel.python.pytorch import nfsp
    except ImportError as e:
        raise SystemExit(f"OpenSpiel's PyTorch NFSP does not import ({e}): pip install dm-tree") from None
    torch.set_num_threads(1)
    budgets = sorted(budgets)
    env = rl_environment.Environment(game, players=2)
    env.seed(seed)
    nfsp.set_seed(seed)
    size, actions = env.observation_spec()["info_state"][0], env.action_spec()["num_actions"]
    agents = [nfsp.NFSP(p, size, actions, [128], int(2e6), 0.1, replay_buffer_capacity=int(2e5),
                        epsilon_decay_duration=int(budgets[-1]), epsilon_start=0.06, epsilon_end=0.001,
                        seed=seed * 2 + p) for p in range(2)]
    out, steps, nxt = {}, 0, 0
    while nxt < len(budgets):
        ts = env.reset()
        while not ts.last():
            ts = env.step([agents[ts.observations["current_player"]].step(ts).action])
            steps += 1
        for agent in agents:  # the episode's end: both learn from it
            agent.step(ts)
        while nxt < len(budgets) and steps >= budgets[nxt]:
            out[budgets[nxt]] = {"latest": meter(average_policy(meter, agents)), "env_steps": steps}
            progress(f"  nfsp {game} seed {seed}: NashConv {out[budgets[nxt]]['latest']:.4f} at {steps:,} env steps")
            nxt += 1
    return out


def main():
    from _common import parse_steps
    from hpcmarl.league.exploitability import NashConv
    import pyspiel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--game", default="kuhn_poker", choices=["kuhn_poker", "leduc_poker"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budgets", default="250k,1m")
    a = ap.parse_args()
    train(a.game, a.seed, [parse_steps(b) for b in a.budgets.split(",")], NashConv(pyspiel.load_game(a.game)))


if __name__ == "__main__":
    main()
