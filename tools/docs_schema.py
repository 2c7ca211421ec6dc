"""The HDF5 files of a run as data: every attribute and dataset a writer writes (name, type, shape, when it is written,
meaning), and the reference page rendered from it (:func:`schema_page`). run.h5's row tables (/episodes, /unrolls,
/eval, /eval_episodes) are read from their declarations in :mod:`hpcmarl.storage.schema`, which the writers use.
:func:`docs_specimens.check_run` checks it against real files: in a specimen run every name found must be documented
as written in that run, and every name documented as written there must be found. Names are patterns: ``<g>`` a
policy (or league) group of the run, ``NNNNN`` a 5-digit rank or actor number, ``<i>``/``<k>`` an integer,
``<param>`` a dotted parameter name, ``<table>`` a further run.h5 table, ``<name>`` a league group,
``<key>``/``<field>`` any path.
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

import numpy as np

from hpcmarl.storage import schema

ALL = ("ppo", "qmix", "matrace", "nigt", "league")
# when a name is written: (the page's words, the specimens that must show it)
WHEN: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "always": ("always", ALL),
    "trajectories": ("always", ("ppo", "qmix", "matrace", "league")),
    "index": ("always", ("ppo",)),
    "rollout": ("rollout flows (not NIGT)", ("ppo", "qmix", "matrace", "league")),
    "sync": ("synchronous rollout flow (PPO, QMIX/VDN, league)", ("ppo", "qmix", "league")),
    "ppo": ("PPO (`mappo`, `ippo`)", ("ppo", "league")),
    "ppo-matrace": ("PPO, MA-Trace", ("ppo", "matrace", "league")),
    "ppo-only": ("PPO outside league mode", ("ppo",)),
    "actor-critic": ("PPO, MA-Trace (league: under `group/<name>/`)", ("ppo", "matrace")),
    "policy-net": ("PPO, MA-Trace, NIGT (league: under `group/<name>/`)", ("ppo", "matrace", "nigt")),
    "adam": ("PPO, MA-Trace, QMIX/VDN (league: under `group/<name>/`)", ("ppo", "matrace", "qmix")),
    "ppo-learners": ("PPO (league mode too)", ("ppo", "league")),
    "matrace": ("MA-Trace (`algo.name: matrace`)", ("matrace",)),
    "qmix": ("QMIX/VDN", ("qmix",)),
    "eval": ("`eval.every_env_steps` > 0", ("ppo",)),
    "qmix-mixer": ("QMIX (not VDN)", ("qmix",)),
    "replay": ("QMIX/VDN with `algo.checkpoint_replay`", ("qmix",)),
    "reward-norm": ("QMIX/VDN with `algo.reward_norm`", ("qmix",)),
    "ppo-reward-norm": ("PPO outside league mode, with `algo.reward_norm`", ("ppo",)),
    "mast": ("MAST (`algo.sparsity` > 0)", ("qmix",)),
    "nigt": ("NIGT (`algo.name: nigt`)", ("nigt",)),
    "league": ("league mode", ("league",)),
    "openspiel": ("league mode, OpenSpiel games (`league.exploitability_every` or `league.meta_game: exact`)",
                  ("league",)),
}

ATTR, DATA = "attribute", "dataset"
PATHS = [  # (glob-like path in the run directory, file key): every file of a run directory is one of these
    ("config.yaml", "config"), ("run.h5", "run"), ("trajectories/actor-NNNNN.h5", "trajectories"),
    ("trajectories/index.h5", "index"), ("checkpoints/ckpt-NNNNNNNNN.h5", "checkpoint"),
    ("pool/<name>-vNNNNNNN.h5", "pool"), ("eval/ckpt-NNNNNNNNN.h5", "eval")]

TREE = """runs/<name>/                       (run_dir; under Slurm runs/<name>-<job id>)
  config.yaml                      the resolved config; first lines `# derived: key = value` list what hpcmarl filled in
  run.h5                           lead learner only; SWMR once its datasets exist
  trajectories/actor-NNNNN.h5      one per actor (rollout flows, output.trajectories); complete episodes only
  trajectories/index.h5            written by `hpcmarl index`: one virtual-dataset view over the actor files
  checkpoints/ckpt-NNNNNNNNN.h5    the newest output.keep_checkpoints; NNNNNNNNN = update
  pool/<name>-vNNNNNNN.h5          league mode: one frozen policy snapshot of learner group <name> per file
  eval/ckpt-NNNNNNNNN.h5           eval.every_env_steps > 0: the policy of the best evaluation so far"""

_RUN_ATTRS = [
    ("kind", "str", "always", "`hpcmarl.run`"),
    ("schema_version", "int64", "always", "`1`"),
    ("config", "str", "always", "the resolved config as YAML (every key, defaults filled in)"),
    ("git_sha", "str", "always", "commit of the hpcmarl checkout that ran (`unknown` outside a git checkout)"),
    ("versions", "str (JSON)", "always", "package versions (`hpcmarl`, `python`, `numpy`, `torch`, `h5py`, …)"),
    ("mpi_library", "str", "always", "first line of `MPI.Get_library_version()`"),
    ("rank_map", "str (JSON)", "always", "one `{rank, role, host}` per MPI rank"),
    ("slurm", "str (JSON)", "always", "the `SLURM_*` environment variables of the lead learner (`{}` outside Slurm)"),
    ("start_time", "str", "always", "start of this session, `%Y-%m-%dT%H:%M:%S%z` (rewritten on resume)"),
    ("command_line", "str", "always", "the command line of the lead learner"),
    ("world_size", "int64", "always", "MPI ranks (1 in serial mode)"),
    ("learners", "int64", "always", "learner ranks"),
    ("actors", "int64", "always", "actor ranks (0 in serial mode: the learner steps its own environments)"),
    ("env", "str", "always", "`env.name`"),
    ("algo", "str", "always", "`algo.name`"),
    ("groups", "str (JSON)", "always", "policy group names in their fixed order (league mode: the league groups)"),
    ("group_agents", "str (JSON)", "always", "`{group: [agent names]}` in the fixed agent order"),
    ("league_groups", "str (JSON)", "always", "league groups (`[]` outside league mode)"),
    ("league_policy_groups", "str (JSON)", "always", "the policy-map group each league group plays (`[]` outside "
                                                     "league mode)"),
    ("league_outcome", "str", "always", "`competitive` or `cooperative` (empty outside league mode)"),
    ("resumed_from", "str", "always", "the checkpoint this session resumed from; empty for a fresh start"),
    ("discarded_episodes", "int64", "always", "episodes in flight discarded by stops so far (set when the run stops)"),
]
_METRICS = [
    ("metrics/update", "float64", "(N,)", "always", "updates done after this one (1, 2, …; continues across resumes)"),
    ("metrics/env_steps", "float64", "(N,)", "always", "env steps so far (all actors and env copies)"),
    ("metrics/wall_time", "float64", "(N,)", "always", "seconds since the run started (continues across resumes)"),
    ("metrics/episodes", "float64", "(N,)", "always", "episodes finished so far"),
    ("metrics/sps", "float64", "(N,)", "always", "env steps per second of this session"),
    ("metrics/env_errors", "float64", "(N,)", "always", "env copies re-created after an exception so far "
                                                        "(`actors.env_errors: reset`)"),
    ("metrics/lag_mean", "float64", "(N,)", "always", "mean policy lag of the data of this update (versions between "
                                                      "weights it was made with and the learner's)"),
    ("metrics/lag_max", "float64", "(N,)", "always", "largest policy lag in this update"),
    ("metrics/return/<g>", "float64", "(N,)", "always", "mean return of group `<g>` over the episodes finished in this "
                                                        "update (NaN if none)"),
    ("metrics/return_window/<g>", "float64", "(N,)", "always", "mean return of `<g>` over the last "
                                                               "`output.episode_window` episodes"),
    ("metrics/episode_length", "float64", "(N,)", "always", "mean length of the episodes finished in this update"),
    ("metrics/win_rate", "float64", "(N,)", "always", "won share of the episodes finished in this update where the env "
                                                     "reports an outcome (SMAX battles; else NaN)"),
    ("metrics/win_rate_window", "float64", "(N,)", "always", "won share over the last `output.episode_window` such "
                                                            "episodes"),
    ("metrics/grad_norm", "float64", "(N,)", "always", "global gradient norm (before clipping; NIGT: of the round's "
                                                       "aggregated gradient)"),
    ("metrics/time/allreduce", "float64", "(N,)", "always", "seconds in the gradient all-reduce (mean over learners)"),
    ("metrics/time/update", "float64", "(N,)", "always", "seconds of the learner update (mean over learners; NIGT: the "
     "step), learner.update_delay_s included"),
    ("metrics/time/wait_unrolls", "float64", "(N,)", "rollout", "seconds learners waited for unrolls"),
    ("metrics/time/collect", "float64", "(N,)", "sync", "seconds an actor spent collecting one unroll (mean)"),
    ("metrics/time/send_weights", "float64", "(N,)", "sync", "seconds spent sending the weights"),
    ("metrics/time/actor_env", "float64", "(N,)", "sync", "actor seconds stepping environments, per unroll"),
    ("metrics/time/actor_infer", "float64", "(N,)", "sync", "actor seconds of policy inference, per unroll"),
    ("metrics/time/actor_wait", "float64", "(N,)", "sync", "actor seconds waiting for weights, per unroll"),
    ("metrics/time/actor_send", "float64", "(N,)", "sync", "actor seconds sending the unroll, per unroll"),
    ("metrics/<g>/policy_loss", "float64", "(N,)", "ppo-matrace", "policy loss of group `<g>`"),
    ("metrics/<g>/value_loss", "float64", "(N,)", "ppo-matrace", "value loss of `<g>`"),
    ("metrics/<g>/entropy", "float64", "(N,)", "ppo-matrace", "mean policy entropy of `<g>`"),
    ("metrics/<g>/approx_kl", "float64", "(N,)", "ppo", "approximate KL between behaviour and updated policy"),
    ("metrics/<g>/clip_fraction", "float64", "(N,)", "ppo", "fraction of samples whose ratio was clipped"),
    ("metrics/<g>/rho_mean", "float64", "(N,)", "matrace", "mean truncated importance ratio rho"),
    ("metrics/<g>/c_mean", "float64", "(N,)", "matrace", "mean truncated trace coefficient c"),
    ("metrics/entropy_coef", "float64", "(N,)", "matrace", "entropy coefficient (adaptive with "
                                                          "`algo.entropy_adaptive`)"),
    ("metrics/queue_dropped", "float64", "(N,)", "matrace", "unrolls dropped at a full queue so far"),
    ("metrics/queue_length", "float64", "(N,)", "matrace", "unrolls waiting in the learner's queue"),
    ("metrics/updates_per_s", "float64", "(N,)", "matrace", "learner updates per second"),
    ("metrics/time/actor_backpressure", "float64", "(N,)", "matrace", "seconds an actor waited for its send, per "
                                                                       "unroll"),
    ("metrics/loss", "float64", "(N,)", "qmix", "mean squared TD error"),
    ("metrics/q_taken", "float64", "(N,)", "qmix", "mean Q_tot of the taken actions over valid steps"),
    ("metrics/target_mean", "float64", "(N,)", "qmix", "mean TD target"),
    ("metrics/td_abs", "float64", "(N,)", "qmix", "mean absolute TD error"),
    ("metrics/epsilon", "float64", "(N,)", "qmix", "exploration epsilon handed to actors with the next weights"),
    ("metrics/td_lambda", "float64", "(N,)", "qmix", "lambda used (0 before `algo.td_lambda_after`)"),
    ("metrics/train_steps", "float64", "(N,)", "qmix", "gradient steps this update (0 while the replay fills)"),
    ("metrics/replay_episodes", "float64", "(N,)", "qmix", "episode segments in the replay"),
    ("metrics/flops/train_update", "float64", "(N,)", "qmix", "training FLOPs this update (active weights only)"),
    ("metrics/flops/train_total", "float64", "(N,)", "qmix", "training FLOPs so far, per learner"),
    ("metrics/flops/inference_step", "float64", "(N,)", "qmix", "forward FLOPs of one env step, all agents"),
    ("metrics/sparsity", "float64", "(N,)", "qmix", "fraction of zero weights over the sparse layers (0 dense)"),
    ("metrics/topology/dropped", "float64", "(N,)", "qmix", "RigL weights dropped this update"),
    ("metrics/topology/grown", "float64", "(N,)", "qmix", "RigL weights grown this update"),
    ("metrics/round", "float64", "(N,)", "nigt", "the round this row closes (`update` = round + 1)"),
    ("metrics/round_time", "float64", "(N,)", "nigt", "seconds from handing out the query point to the round closing"),
    ("metrics/grads/accepted", "float64", "(N,)", "nigt", "gradients used in this round (all learners)"),
    ("metrics/grads/dropped", "float64", "(N,)", "nigt", "gradients received but not used (stale or late)"),
    ("metrics/grads/abandoned", "float64", "(N,)", "nigt", "trajectories actors gave up because a new round started"),
    ("metrics/grads/actor-NNNNN/accepted", "float64", "(N,)", "nigt", "gradients of actor NNNNN used so far"),
    ("metrics/grads/actor-NNNNN/dropped", "float64", "(N,)", "nigt", "gradients of actor NNNNN dropped so far"),
    ("metrics/direction_norm", "float64", "(N,)", "nigt", "L2 norm of the momentum direction d_t"),
]


def _declared(table: str, cols, when: str) -> list:
    """A run.h5 table declared in hpcmarl.storage.schema, as this page's rows."""
    return [(f"{table}/{name}", np.dtype(dtype).name, "(N,)", when, meaning) for name, dtype, meaning in cols]


_RUN_EPISODES = _declared("episodes", schema.EPISODES, "always")
_UNROLLS = _declared("unrolls", schema.UNROLLS, "matrace")
_EVAL = _declared("eval", schema.EVAL, "eval") + _declared("eval_episodes", schema.EVAL_EPISODES, "eval")
_LEAGUE_TABLES = [  # (table, columns, when, one row per)
    ("pool", "member group version update wall_time", "league", "snapshot added to the pool (file "
     "`pool/<name>-vNNNNNNN.h5`)"),
    ("matches", "update wall_time group member wins draws losses return_sum", "league", "(learner group, member of the "
     "other seats) pair with games reported since the previous row set; `return_sum`: the trained seats' returns "
     "(cooperative: team returns, every game a draw); self-play games are not listed"),
    ("ratings", "update wall_time member elo mu sigma ordinal games", "league", "rated member after an update "
     "(OpenSkill Plackett–Luce mu, sigma, ordinal = mu − 3 sigma; Elo from 1000, K = `league.elo_k`); empty in "
     "cooperative leagues"),
    ("eval", "update wall_time a b wins draws losses return_sum", "league", "finished evaluation matchup "
     "(`league.eval_games` fixed-seed games, seats alternated, from `a`'s view)"),
    ("exploitability", "update wall_time member pool latest uniform meta_nash", "openspiel", "exact NashConv of "
     "snapshot `member` (`latest`) and of the uniform and meta-Nash mixtures over the `pool` snapshots up to it"),
]
_LEAGUE_COLUMNS = {
    "member": "member id", "group": "league group index", "version": "policy version of the snapshot",
    "update": "the league's newest update", "wall_time": "run wall time, seconds", "wins": "games won",
    "draws": "games drawn", "losses": "games lost", "return_sum": "summed return (see the row)", "a": "member id",
    "b": "opponent member id", "elo": "Elo rating", "mu": "OpenSkill mu", "sigma": "OpenSkill sigma",
    "ordinal": "mu − 3 sigma", "games": "games rated", "pool": "snapshots in the mixtures",
    "latest": "NashConv of snapshot `member`", "uniform": "NashConv of the uniform pool mixture",
    "meta_nash": "NashConv of the meta-Nash pool mixture"}
_LEAGUE = [(f"league/{t}/{c}", "float64", "(N,)", w, (f"one row per {d}; " if c == cols.split()[0] else "")
            + _LEAGUE_COLUMNS[c]) for t, cols, w, d in _LEAGUE_TABLES for c in cols.split()]
_TRAJ_ATTRS = [
    ("kind", "str", "trajectories", "`hpcmarl.trajectories`"),
    ("schema_version", "int64", "trajectories", "`1`"),
    ("groups", "str (JSON)", "trajectories", "`{group: [agent names]}`; the agent axis of `/steps/<g>/…` follows it"),
    ("actor", "int64", "trajectories", "actor index"),
    ("env", "str", "trajectories", "`env.name`"),
]
_STEPS = [
    ("steps/env", "int32", "(N,)", "env copy within the actor"),
    ("steps/episode", "int64", "(N,)", "episode id (matches `/episodes/episode`)"),
    ("steps/t", "int32", "(N,)", "step within the episode, from 0"),
    ("steps/policy_version", "int64", "(N,)", "policy version that chose this step's actions"),
    ("steps/<g>/obs", "float32", "(N, n_g, obs_g)", "observation of each agent of `<g>` before acting"),
    ("steps/<g>/action", "int64", "(N, n_g)", "action taken (continuous actions: float32 `(N, n_g, act_dim)`)"),
    ("steps/<g>/logp", "float32", "(N, n_g)", "log-probability of that action under the behaviour policy"),
    ("steps/<g>/reward", "float32", "(N, n_g)", "reward received after the step"),
    ("steps/<g>/terminated", "uint8", "(N, n_g)", "1 where the agent's episode terminated at this step"),
    ("steps/<g>/truncated", "uint8", "(N, n_g)", "1 where it was truncated (time limit) at this step"),
    ("steps/<g>/alive", "uint8", "(N, n_g)", "1 where the agent was present and acting"),
]
_TRAJ_EPISODES = [
    ("episodes/episode", "int64", "(N,)", "episode id within this file (0, 1, …)"),
    ("episodes/env", "int32", "(N,)", "env copy within the actor"),
    ("episodes/start", "int64", "(N,)", "first row of the episode in `/steps`"),
    ("episodes/length", "int32", "(N,)", "number of rows (steps)"),
    ("episodes/policy_version_first", "int64", "(N,)", "policy version of its first step"),
    ("episodes/policy_version_last", "int64", "(N,)", "policy version of its last step"),
    ("episodes/update", "int64", "(N,)", "learner update that trains on the unroll the episode ended in (synchronous "
                                         "flow: matches run.h5 `/episodes/update`)"),
    ("episodes/return/<g>", "float64", "(N,)", "sum of `/steps/<g>/reward` over the episode and the group's agents"),
]
_INDEX_ATTRS = [
    ("kind", "str", "index", "`hpcmarl.trajectory_index`"),
    ("schema_version", "int64", "index", "`1`"),
    ("sources", "str (JSON)", "index", "the actor files, relative to the index file"),
    ("actors", "int64", "index", "actor index of each source (array)"),
    ("source_steps_rows", "int64", "index", "`/steps` rows of each source at indexing time (array)"),
    ("source_steps_offsets", "int64", "index", "first row of each source in the concatenated `/steps` (array)"),
    ("source_episodes_rows", "int64", "index", "`/episodes` rows of each source at indexing time (array)"),
    ("groups", "str (JSON)", "index", "copied from the first actor file"),
    ("env", "str", "index", "copied from the first actor file"),
    ("created", "str", "index", "when the index was written"),
]
_INDEX = ([(n, t, s, "index", d + " (virtual: the actor files' rows concatenated)")
           for n, t, s, d in _STEPS + _TRAJ_EPISODES]
          + [("steps/actor", "int32", "(N,)", "index", "the actor each row came from"),
             ("episodes/actor", "int32", "(N,)", "index", "the actor each row came from"),
             ("episodes/global_start", "int64", "(N,)", "index", "first row of the episode in the concatenated "
              "`/steps`")])
_CKPT_ATTRS = [
    ("kind", "str", "always", "`hpcmarl.checkpoint`"),
    ("schema_version", "int64", "always", "`1`"),
    ("update", "int64", "always", "updates done (NIGT: rounds)"),
    ("env_steps", "int64", "always", "env steps done"),
    ("episodes", "int64", "always", "episodes finished"),
    ("wall_time", "float64", "always", "run wall time, seconds"),
    ("discarded_episodes", "int64", "always", "episodes in flight discarded by stops so far"),
    ("env_errors", "int64", "always", "env copies re-created after an exception so far"),
    ("rows_episodes", "int64", "always", "rows of run.h5 `/episodes` (a resume cuts the table to them)"),
    ("rows_metrics", "int64", "always", "rows of run.h5 `/metrics` at this checkpoint"),
    ("rows_<table>", "int64", "further-tables", "rows of each further run.h5 table (`unrolls`, `league/…`)"),
    ("rows_eval", "int64", "eval", "rows of run.h5 `/eval` (the evaluation of this checkpoint included)"),
    ("rows_eval_episodes", "int64", "eval", "rows of run.h5 `/eval_episodes`"),
    ("version", "int64", "always", "policy version the next unrolls will be made with"),
    ("config", "str", "always", "the resolved config as YAML"),
    ("algo", "str", "always", "`algo.name`"),
    ("env", "str", "always", "`env.name`"),
    ("groups", "str (JSON)", "always", "policy group names"),
    ("learner_param_checksums", "str (JSON)", "always", "parameter checksum of each learner (equal within a group)"),
    ("policy_meta", "str (JSON)", "league", "per league group the pool-snapshot attributes of `policy/<name>`"),
    ("complete", "int64", "always", "`1`, written last (`load_checkpoint` refuses a file without it)"),
]
WHEN["further-tables"] = ("MA-Trace (`unrolls`), league mode (`league/…`)", ("matrace", "league"))
_CKPT = [
    ("model/policies.<g>.net.<i>.weight", "float32", "(out, in)", "policy-net", "policy MLP of `<g>`: "
     "`torch.nn.Linear` layers `i = 0, 2, …, 2·algo.layers`"),
    ("model/policies.<g>.net.<i>.bias", "float32", "(out,)", "policy-net", "its biases"),
    ("model/critics.<g>.<i>.weight", "float32", "(out, in)", "actor-critic", "critic MLP of `<g>` (centralized: input "
     "all agents' observations or the state)"),
    ("model/critics.<g>.<i>.bias", "float32", "(out,)", "actor-critic", "its biases"),
    ("model/entropy_psi", "float32", "()", "matrace", "psi of the adaptive entropy coefficient exp(entropy_speed·psi)"),
    ("optim/<k>/exp_avg", "float32", "shape of parameter k", "adam", "Adam first moment of parameter `k` (order of "
     "`model.parameters()`)"),
    ("optim/<k>/exp_avg_sq", "float32", "shape of parameter k", "adam", "Adam second moment"),
    ("optim/<k>/step", "float32", "()", "adam", "Adam step count"),
    ("value_norm/<g>", "float64", "(3,)", "ppo-only", "ValueNorm of `<g>`: running mean, mean of squares, debiasing "
     "weight (`algo.value_norm`)"),
    ("reward_norm/<g>", "float64", "(3,)", "ppo-reward-norm", "reward standardiser of `<g>`: running mean, mean of "
     "squares, debiasing weight"),
    ("rng/learner_gen", "uint8", "(5056,)", "ppo-only", "the lead learner's minibatch `torch.Generator` state"),
    ("rng/learner-NNNNN/torch", "uint8", "(5056,)", "sync", "`torch.get_rng_state()` of learner rank NNNNN"),
    ("rng/actor-NNNNN/torch", "uint8", "(5056,)", "sync", "torch RNG state of actor NNNNN"),
    ("rng/actor-NNNNN/env_seeds", "int64", "(E + 1 + K,)", "sync", "actor NNNNN's env copies: the seed each "
     "current episode started from, the stream's seed, the reset counter of each of its K parts (`env.parts`, 1 by "
     "default)"),
    ("learners/NNNNN/rng/learner_gen", "uint8", "(5056,)", "ppo-learners", "learner rank NNNNN's own generator state"),
    ("learners/NNNNN/rng/replay", "uint8", "(bytes,)", "qmix", "learner NNNNN's replay sampling RNG (JSON bytes)"),
    ("learners/NNNNN/local/replay/data/<field>", "", "(rows, …)", "replay", "learner NNNNN's replay buffer: field "
     "`<field>` of the filled rows"),
    ("learners/NNNNN/local/replay/length", "int64", "(rows,)", "replay", "length of each stored episode segment"),
    ("learners/NNNNN/local/replay/counters", "int64", "(3,)", "replay", "replay size, position, episodes added"),
    ("rng/replay", "uint8", "(bytes,)", "qmix", "the lead learner's replay sampling generator (JSON bytes)"),
    ("model/policies.<g>.<i>.weight", "float32", "(out, in)", "qmix", "utility MLP of `<g>` (input `obs_dim + n_g`: "
     "one-hot agent index appended; one output per action)"),
    ("model/policies.<g>.<i>.bias", "float32", "(out,)", "qmix", "its biases"),
    ("model/mixer.<param>", "float32", "", "qmix-mixer", "the mixer's hypernetworks (`hyper_w1`, `hyper_b1`, "
     "`hyper_w2`, `v`)"),
    ("target/<param>", "float32", "as model/<param>", "qmix", "the target network"),
    ("reward_norm", "float64", "(3,)", "reward-norm", "team-reward normaliser: running mean, mean of squares, "
     "debiasing weight"),
    ("counters/qmix", "float64", "(3,)", "qmix", "gradient steps, training FLOPs, dense-gradient FLOPs so far"),
    ("mask/<param>", "uint8", "as model/<param>", "mast", "1 where weight `<param>` is active (every 2-D weight of "
     "agent nets and mixer)"),
    ("mask/version", "int64", "()", "mast", "topology updates that changed a mask so far"),
    ("nigt/theta", "float64", "(d,)", "nigt", "theta_t (flat, in `model/policies.*` order)"),
    ("nigt/theta_prev", "float64", "(d,)", "nigt", "theta_(t−1)"),
    ("nigt/d", "float64", "(d,)", "nigt", "the momentum direction d_t"),
    ("nigt/round", "int64", "(1,)", "nigt", "rounds done"),
    ("grads/accepted", "int64", "(actors,)", "nigt", "gradients used per actor so far"),
    ("grads/dropped", "int64", "(actors,)", "nigt", "gradients dropped per actor so far"),
    ("group/<name>/<key>", "", "", "league", "league group `<name>`'s learner state (`model/…`, `optim/…`, "
     "`value_norm/…`, `rng/learner_gen` as above)"),
    ("policy/<name>", "float32", "(d,)", "league", "group `<name>`'s flat policy parameters (what `hpcmarl match` "
     "plays)"),
    ("league/members", "float64", "(P, 5)", "league", "pool member id, group index, version, update, wall time"),
    ("league/payoff_ids", "bytes", "(M,)", "league", "payoff table member names (e.g. `main-v25`, `main(live)`)"),
    ("league/payoff_pairs", "int64", "(R, 5)", "league", "one row per pair that has played: i, j (i ≤ j), wins, draws, "
     "losses of i against j"),
    ("league/payoff_pair_returns", "float64", "(R,)", "league", "summed return of i against j, per row"),
    ("league/rating_ids", "bytes", "(K,)", "league", "rated members"),
    ("league/rating_values", "float64", "(K, 4)", "league", "Elo, mu, sigma, games per rated member"),
    ("league/recent", "float64", "(K, 3)", "league", "group, member, moving-average score (PFSP win rates)"),
    ("league/last_snapshot", "int64", "(groups,)", "league", "update of each group's newest snapshot (−1: none)"),
    ("league/counters", "float64", "(3,)", "league", "games rated, self-play games, league wall time"),
    ("league/eval_queue", "int64", "(Q, 2)", "league", "evaluation matchups (a, b) still to play"),
    ("league/measure_queue", "int64", "(Q, 2)", "openspiel", "snapshots still to measure (member, with NashConv)"),
    ("league/measured", "int64", "(N,)", "openspiel", "snapshots measured"),
    ("league/exact", "float64", "(E, 3)", "openspiel", "exact expected return of member a against b"),
]
_POOL_ATTRS = [(n, t, "league", d) for n, t, d in [
    ("kind", "str", "`hpcmarl-pool`"), ("schema_version", "int64", "`1`"), ("group", "str", "league group"),
    ("policy_group", "str", "the policy-map group it plays"), ("version", "int64", "policy version"),
    ("update", "int64", "update at which it was taken"), ("member", "int64", "pool member id (0, 1, … in order added)"),
    ("env", "str", "`env.name`"), ("env_kwargs", "str (JSON)", "`env.kwargs` (the game as it was played)"),
    ("policy_map", "str (JSON)", "`policy_map` (`null`: the env's)"), ("seats", "str", "`league.seats`"),
    ("obs_dim", "int64", "observation size"), ("obs_shape", "int64", "observation shape (array)"),
    ("n_actions", "int64", "actions"), ("hidden", "int64", "`algo.hidden`"), ("layers", "int64", "`algo.layers`"),
    ("encoder", "str", "`algo.encoder`"), ("greedy", "int64", "1: plays its most likely legal action "
                                                           "(`league.groups.N.snapshot_greedy`)")]]
_POOL = [("params", "float32", "(d,)", "league", "the policy parameters, flat, in `model/policies.*` order")]

# file key -> (title, anchor, intro, [(table title, anchor, ATTR|DATA, rows)])
FILES = {
    "run": ("run.h5", "run-h5", "Written by the lead learner (`storage.RunWriter`), `libver=\"latest\"`, switched to "
            "SWMR after the first metrics row, so it can be read while the run goes on. Tables are groups of 1-D "
            "datasets with one row count (axis 0 grows; maxshape `(None,)`); a reader of a live file cuts to the "
            "shortest column. On resume, rows written after the checkpoint are dropped (its `rows_<table>`).",
            [("Root attributes", "run-h5-attributes", ATTR, _RUN_ATTRS),
             ("/metrics: one row per update (NIGT: per round)", "run-h5-metrics", DATA, _METRICS,
              "Chunks 256 rows, fill value NaN. The columns are fixed by the first row logged; a value a row does "
              "not have (a return in an update where no episode finished) is NaN."),
             ("/episodes: one row per finished episode", "run-h5-episodes", DATA, _RUN_EPISODES,
              "Chunks 1024 rows (as every further table). Episodes finished in one update share its `update`, "
              "`env_steps` and `wall_time`. NIGT: one row per trajectory received (used or not)."),
             ("/unrolls: one row per unroll trained on", "run-h5-unrolls", DATA, _UNROLLS),
             ("/eval and /eval_episodes: the evaluation protocol", "run-h5-eval", DATA, _EVAL,
              "One `/eval` row per evaluation (docs/operations/evaluation.md), one `/eval_episodes` row per episode "
              "played in it."),
             ("/league: league tables", "run-h5-league", DATA, _LEAGUE, "Five tables of float64 columns. Member ids: "
              "pool snapshots `0, 1, …` in the order added; the live policy of league group i is `−(i+1)`; the "
              "scripted baselines `−100` (random), `−101` (lookahead, Connect Four), `−102` (charge, battle_v4)."),
             ]),
    "trajectories": ("trajectories/actor-NNNNN.h5", "trajectories", "One file per actor (`storage.TrajectoryWriter`; "
                     "`actor-00000.h5` in serial mode), `libver=\"latest\"`, SWMR. Only complete episodes, each kept "
                     "with probability `output.trajectory_fraction`; an episode's steps are contiguous in `/steps` "
                     "(from row `start`, `length` rows). `/steps` chunks 1024 rows, LZF; `/episodes` chunks 256. On "
                     "resume the file is rolled back to the checkpoint's update, then appended to.",
                     [("Root attributes", "trajectories-attributes", ATTR, _TRAJ_ATTRS),
                      ("/steps and /episodes", "trajectories-datasets", DATA,
                       [(n, t, s, "trajectories", d) for n, t, s, d in _STEPS + _TRAJ_EPISODES])]),
    "index": ("trajectories/index.h5", "index", "Written by `hpcmarl index` (`build_index`): HDF5 virtual datasets "
              "that concatenate every actor file's rows in actor order (sources referenced by relative paths), plus "
              "the columns below that say where each row came from. Read it with `open_index` (SWMR).",
              [("Root attributes", "index-attributes", ATTR, _INDEX_ATTRS),
               ("/steps and /episodes", "index-datasets", DATA, _INDEX)]),
    "checkpoint": ("checkpoints/ckpt-NNNNNNNNN.h5", "checkpoint", "Written by `storage.save_checkpoint` every "
                   "`output.checkpoint_every` updates and at the end (NNNNNNNNN = update): to a temporary name, "
                   "fsynced, renamed, so a checkpoint is complete or absent. Default `libver`, no SWMR; arrays of more "
                   "than 4096 elements gzip-compressed. Arrays named `rng/…` and `local/…` by a learner are each "
                   "learner's own (under `learners/NNNNN/`); the rest is the lead learner's.",
                   [("Root attributes", "checkpoint-attributes", ATTR, _CKPT_ATTRS),
                    ("Datasets", "checkpoint-datasets", DATA, _CKPT)]),
    "eval": ("eval/ckpt-NNNNNNNNN.h5", "eval-policy", "The policy of the best evaluation so far (NNNNNNNNN = its "
             "update), written like a checkpoint when an evaluation beats every earlier one; only the newest is kept "
             "and checkpoint pruning never removes it. `hpcmarl evaluate` plays it; the absolute metric is its "
             "re-evaluation.",
             [("Root attributes", "eval-policy-attributes", ATTR, [(n, t, "eval", d) for n, t, d in [
                 ("kind", "str", "`hpcmarl.checkpoint`"), ("schema_version", "int64", "`1`"),
                 ("update", "int64", "update of the evaluated policy"), ("env_steps", "int64", "env steps then"),
                 ("algo", "str", "`algo.name`"), ("env", "str", "`env.name`"),
                 ("groups", "str (JSON)", "policy group names"), ("config", "str", "the run's resolved config (YAML)"),
                 ("eval_score", "float64", "the evaluation's mean return (mean over groups)"),
                 ("complete", "int64", "`1`, written last")]]),
              ("Datasets", "eval-policy-datasets", DATA, [
                  ("model/policies.<g>.net.<i>.weight", "float32", "(out, in)", "eval", "the policy networks, as in "
                   "a checkpoint (`model/policies.*` only)"),
                  ("model/policies.<g>.net.<i>.bias", "float32", "(out,)", "eval", "their biases")])]),
    "pool": ("pool/<name>-vNNNNNNN.h5", "pool", "League mode: one frozen policy snapshot of league group "
             "`<name>` (7-digit version), written by the league rank (temporary name, then rename).",
             [("Root attributes", "pool-attributes", ATTR, _POOL_ATTRS), ("Datasets", "pool-datasets", DATA, _POOL)]),
}

INTRO = """Every file a run writes is HDF5 with two root attributes that identify it: `kind` and `schema_version`
(`1`). Readers (`hpcmarl.storage.open_read`, `Run`, the analysis tools) refuse another kind or version with a one-line
error naming the file. Nothing is pickled: datasets are plain numeric arrays, attributes numbers or strings (structured
ones JSON text); groups and datasets carry no attributes. Names are paths; `<g>` is a policy group (league mode: a
league group; see the `groups` attribute), `n_g` its agents, `obs_g` its observation size, `NNNNN` a zero-padded rank
or actor number, `<i>`/`<k>` integers, `<param>` a dotted parameter name, `N` the rows of a table. *Written*: in which
runs the name appears. tests/unit/test_docs.py makes one tiny run per flow and mode with the real writers and checks
that the names in their files are exactly the names documented here for that run."""


def schema_page() -> str:
    import docs_gen

    md, code = docs_gen.md, docs_gen.code
    src = "tools/docs_schema.py and hpcmarl/storage/schema.py"
    out = ["# HDF5 schema reference", "", docs_gen.GENERATED.format(src=src), "", INTRO.replace("\n", " "), "",
           "## Files of a run directory {#files}", "", "```text", TREE, "```", ""]
    for title, anchor, intro, tables in FILES.values():
        out += [f"## {md(title)} {{#{anchor}}}", "", md(intro), ""]
        for ttitle, tanchor, kind, rows, *tintro in tables:
            out += [f"### {md(ttitle)} {{#{tanchor}}}", ""] + [md(t) + "\n" for t in tintro]
            if kind == ATTR:
                out += docs_gen.table(["Attribute", "Type", "Written", "Meaning"],
                                      [[code(n), t, md(WHEN[w][0]), md(d)] for n, t, w, d in rows])
            else:
                out += docs_gen.table(["Dataset", "Type", "Shape", "Written", "Meaning"],
                                      [[code(n), t, code(s) if s else "", md(WHEN[w][0]), md(d)]
                                       for n, t, s, w, d in rows])
            out.append("")
    return "\n".join(out)


def entries(file_key: str):
    """``[(ATTR|DATA, name, type, when)]`` documented for one kind of file."""
    out = []
    for _, _, kind, rows, *_ in FILES[file_key][3]:
        for r in rows:
            name, typ, when = (r[0], r[1], r[2]) if kind == ATTR else (r[0], r[1], r[3])
            out.append((kind, name, typ, when))
    return out


_PLACE = {"<g>": None, "<name>": None, "NNNNNNNNN": r"\d{9}", "NNNNNNN": r"\d{7}", "NNNNN": r"\d{5}", "<i>": r"\d+",
          "<k>": r"\d+", "<param>": r"[\w.]+", "<table>": r"(?!episodes$|metrics$)[\w/]+", "<field>": r".+",
          "<key>": r".+"}


def pattern(name: str, groups: List[str]) -> "re.Pattern":
    """The regex of a documented name; ``<g>`` and ``<name>`` match the run's ``groups``."""
    alt = "(?:" + "|".join(re.escape(g) for g in sorted(groups, key=len, reverse=True)) + ")" if groups else r"[^/.]+"
    parts = re.split("(" + "|".join(re.escape(p) for p in _PLACE) + ")", name)
    return re.compile("".join((_PLACE[p] or alt) if p in _PLACE else re.escape(p) for p in parts) + "$")


def table_problems() -> List[str]:
    """Inconsistencies of the tables themselves: an unknown *when*, an unknown ``<placeholder>``."""
    out = []
    for key in FILES:
        for kind, name, _, when in entries(key):
            if when not in WHEN:
                out.append(f"schema {key}: {name}: unknown WHEN tag {when!r}")
            left = re.sub("|".join(re.escape(p) for p in _PLACE), "", name)
            if "<" in left:
                out.append(f"schema {key}: {name}: unknown placeholder")
    for path, key in PATHS:
        if key != "config" and key not in FILES:
            out.append(f"schema: {path} has no section")
    return out
