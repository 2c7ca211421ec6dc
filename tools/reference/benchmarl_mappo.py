"""BenchMARL's MAPPO with its own default experiment, algorithm, MLP and VMAS navigation configs (sampling and training
on the CPU, no evaluation, CSV logging only), run by a Python with benchmarl, torchrl and vmas (the reference arm of
``tools/bench_batched_e2e.py --against benchmarl`` and ``tools/bench_sample_efficiency.py --benchmarl-python``).

    PYTHON tools/reference/benchmarl_mappo.py FRAMES SEED OUT.json

Trains FRAMES env steps (BenchMARL's outputs in the folder ``OUT`` without ``.json``, emptied first), then writes
``OUT.json``: ``{"frames": [...], "return": [...]}``, one point per collection iteration (6,000 env steps): the mean
return of the episodes that ended in it, summed over the agents (BenchMARL logs the mean over the agents of the
group).
"""
import glob
import json
import os
import shutil
import sys


def scalars(folder: str, name: str) -> dict:
    """``{iteration: value}`` of one scalar BenchMARL's CSV logger wrote (lines ``step,value``)."""
    path = glob.glob(os.path.join(folder, "**", "scalars", name + ".csv"), recursive=True)
    if len(path) != 1:
        raise SystemExit(f"expected one {name}.csv under {folder}, found {path}")
    rows = [line.split(",") for line in open(path[0]).read().split()]
    return {int(float(s)): float(v) for s, v in rows}


def curve(folder: str, n_agents: int) -> dict:
    """The iterations' total frames and mean episode returns summed over the agents (an iteration in which no episode
    ended logs no return and has no point)."""
    total = scalars(folder, "counters_total_frames")
    ret = scalars(folder, "collection_agents_reward_episode_reward_mean")
    steps = sorted(set(total) & set(ret))
    return {"frames": [int(total[s]) for s in steps], "return": [ret[s] * n_agents for s in steps]}


def main():
    from benchmarl.algorithms import MappoConfig
    from benchmarl.environments import VmasTask
    from benchmarl.experiment import Experiment, ExperimentConfig
    from benchmarl.models.mlp import MlpConfig

    frames, seed, out = int(sys.argv[1]), int(sys.argv[2]), os.path.abspath(sys.argv[3])
    folder = os.path.splitext(out)[0]
    shutil.rmtree(folder, ignore_errors=True)  # one experiment's CSVs in it
    os.makedirs(folder)
    cfg = ExperimentConfig.get_from_yaml()
    cfg.max_n_frames, cfg.save_folder = frames, folder
    cfg.loggers, cfg.evaluation, cfg.render, cfg.create_json, cfg.checkpoint_at_end = ["csv"], False, False, False, False
    task = VmasTask.NAVIGATION.get_from_yaml()
    Experiment(task=task, algorithm_config=MappoConfig.get_from_yaml(), model_config=MlpConfig.get_from_yaml(),
               critic_model_config=MlpConfig.get_from_yaml(), seed=seed, config=cfg).run()
    with open(out, "w") as f:
        json.dump(curve(folder, task.config["n_agents"]), f)


if __name__ == "__main__":
    main()
