"""JaxMARL's own IPPO baseline on its MPE port, as its ``baselines/IPPO/ippo_ff_mpe.py`` main() runs it (its
``make_train``, its yaml config with ``TOTAL_TIMESTEPS`` and ``NUM_SEEDS=1``, wandb disabled), without the plot,
writing the return its training logged in the last update (``returned_episode_returns``, averaged over the update's
steps and envs: its ``MPELogWrapper`` sums the agents' rewards) to a JSON file. Run by the reference's Python
(``tools/bench_batched_e2e.py --jaxmarl-python``); it reads nothing of hpcmarl's.

    VENV/bin/python tools/reference/jaxmarl_ippo_mpe.py JAXMARL/baselines/IPPO STEPS OUT.json
"""
import json
import os
import sys

baselines, steps, out = sys.argv[1], int(float(sys.argv[2])), sys.argv[3]
sys.path.insert(0, baselines)

import jax  # noqa: E402
import wandb  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import ippo_ff_mpe  # noqa: E402

config = OmegaConf.to_container(OmegaConf.load(os.path.join(baselines, "config", "ippo_ff_mpe.yaml")))
config.update(TOTAL_TIMESTEPS=steps, NUM_SEEDS=1, WANDB_MODE="disabled")
wandb.init(entity=config["ENTITY"], project=config["PROJECT"], config=config, mode=config["WANDB_MODE"])
rng = jax.random.PRNGKey(config["SEED"])
rngs = jax.random.split(rng, config["NUM_SEEDS"])
train_jit = jax.jit(ippo_ff_mpe.make_train(config))
result = jax.vmap(train_jit)(rngs)
curve = result["metrics"]["returned_episode_returns"].mean(axis=0)  # per update
with open(out, "w") as f:
    json.dump({"return": [float(x) for x in curve]}, f)
