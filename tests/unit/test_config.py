"""Config schema, YAML loading, dotted overrides, validation and the ``validate`` CLI."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
import yaml

from hpcmarl import config as C
from hpcmarl.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPREAD = os.path.join(ROOT, "configs", "simple_spread_mappo.yaml")


def write_yaml(tmp_path, data, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return str(p)


def error_of(path=None, overrides=()):
    with pytest.raises(ConfigError) as ei:
        load_config(path, list(overrides))
    return str(ei.value)


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------
def test_defaults_load():
    cfg = load_config(None)
    assert isinstance(cfg, C.Config)
    assert cfg.algo.reward == "team"  # algo.reward=auto, derived: simple_spread is cooperative
    cfg.algo.reward = "auto"
    assert cfg == C.Config()  # nothing else but the dataclass defaults
    assert cfg.env.name == "simple_spread_v3"
    assert type(cfg.algo).__name__ == "PPOConfig" and cfg.algo.name == "mappo"
    assert cfg.topology.learners == 1 and cfg.topology.actors == "auto"
    assert cfg.policy_map is None
    assert cfg.resolved_run_dir == os.path.join("runs", "run")


def test_yaml_values_and_overrides(tmp_path):
    path = write_yaml(tmp_path, {
        "name": "exp1",
        "env": {"name": "simple_tag_v3", "num_envs": 3, "kwargs": {"max_cycles": 10}},
        "algo": {"name": "ippo", "lr": 1e-3, "unroll_length": 7},
        "topology": {"learners": 2},
        "policy_map": {"all": ["adversary_*", "agent_0"]},
    })
    cfg = load_config(path, ["algo.lr=0.0003", "topology.actors=3", "env.kwargs.N=4", "seed=17",
                             "train.target_return=-5.5"])
    assert cfg.name == "exp1"
    assert cfg.env.name == "simple_tag_v3" and cfg.env.num_envs == 3
    # nested mapping merged, not replaced, by the dotted override
    assert cfg.env.kwargs == {"max_cycles": 10, "N": 4}
    assert cfg.algo.name == "ippo" and cfg.algo.unroll_length == 7
    assert cfg.algo.lr == pytest.approx(3e-4) and isinstance(cfg.algo.lr, float)
    assert cfg.topology.learners == 2 and cfg.topology.actors == 3
    assert cfg.seed == 17
    assert cfg.train.target_return == pytest.approx(-5.5)
    assert cfg.policy_map == {"all": ["adversary_*", "agent_0"]}
    # untouched keys keep their defaults
    assert cfg.algo.gamma == type(cfg.algo)().gamma
    assert cfg.output == C.OutputConfig()


@pytest.mark.parametrize("text,value", [("3e-4", 3e-4), ("1E-3", 1e-3), ("5e2", 500.0), ("3.0e-4", 3e-4)])
def test_float_exponent_notation(text, value):
    """``algo.lr=3e-4`` is the CLI's own example; PyYAML (YAML 1.1) reads a mantissa without a dot as a
    string, so the config must still accept it as a float."""
    assert load_config(None, [f"algo.lr={text}"]).algo.lr == pytest.approx(value)
    assert load_config(None, [f"train.target_return=-{text}"]).train.target_return == pytest.approx(-value)


def test_float_exponent_notation_in_yaml_file(tmp_path):
    p = tmp_path / "lr.yaml"
    p.write_text("algo:\n  lr: 3e-4\n")
    assert load_config(str(p)).algo.lr == pytest.approx(3e-4)


def test_override_order_last_wins_and_int_to_float():
    cfg = load_config(None, ["algo.lr=1", "algo.lr=0.5", "algo.epochs=3.0"])
    assert cfg.algo.lr == 0.5
    assert cfg.algo.epochs == 3 and type(cfg.algo.epochs) is int
    cfg = load_config(None, ["algo.lr=1"])
    assert cfg.algo.lr == 1.0 and type(cfg.algo.lr) is float


def test_yaml_roundtrip(tmp_path):
    cfg = load_config(SPREAD, ["env.kwargs.N=2", "algo.epochs=4", "topology.learners=2"])
    p = tmp_path / "dump.yaml"
    p.write_text(C.to_yaml(cfg))
    assert load_config(str(p)) == cfg


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_repo_configs_load(path):
    with open(path) as f:
        raw = yaml.safe_load(f)
    cfg = load_config(path)
    assert cfg.name == raw.get("name", "run")
    assert cfg.env.name == raw.get("env", {}).get("name", C.EnvConfig().name)


def test_repo_has_configs():
    assert glob.glob(os.path.join(ROOT, "configs", "*.yaml"))


# ------------------------------------------------------------------------------------------------
# errors name the key
# ------------------------------------------------------------------------------------------------
def test_unknown_top_level_key():
    msg = error_of(None, ["sed=1"])
    assert "'sed'" in msg and "unknown" in msg


def test_unknown_nested_key_names_full_dotted_key():
    msg = error_of(None, ["algo.lrr=0.1"])
    assert "'algo.lrr'" in msg
    assert "algo.lr'" in msg  # the suggestion is a full dotted key as well
    msg = error_of(None, ["output.keep_checkpoint=3"])
    assert "'output.keep_checkpoint'" in msg


def test_option_of_another_algorithm_names_them():
    msg = error_of(None, ["algo.name=matrace", "algo.recurrent=true"])
    assert "'algo.recurrent'" in msg and "matrace has no option 'recurrent'" in msg and "mappo" in msg
    assert "matrace" not in msg.split("option of")[1]
    assert "option of" not in error_of(None, ["algo.name=matrace", "algo.recurent=true"])  # no algorithm has it


def test_unknown_key_in_yaml(tmp_path):
    path = write_yaml(tmp_path, {"env": {"name": "simple_spread_v3", "num_env": 2}})
    assert "'env.num_env'" in error_of(path)
    path = write_yaml(tmp_path, {"learner": {"backend": "mpi", "devices": "cpu"}})
    assert "'learner.devices'" in error_of(path)


@pytest.mark.parametrize("override,key", [
    ("train.total_env_steps=abc", "train.total_env_steps"),
    ("algo.lr=fast", "algo.lr"),
    ("env.num_envs=[1, 2]", "env.num_envs"),
    ("algo.epochs=2.5", "algo.epochs"),
    ("env.name=3", "env.name"),
    ("env.kwargs=5", "env.kwargs"),
    ("policy_map.agent=agent_*", "policy_map"),  # Optional[...]: the message names the optional key
    ("algo.normalize_advantages=1", "algo.normalize_advantages"),
])
def test_wrong_type_names_key(override, key):
    msg = error_of(None, [override])
    assert f"'{key}'" in msg, msg


@pytest.mark.parametrize("override,key", [
    ("algo.epochs=true", "algo.epochs"),
    ("env.num_envs=false", "env.num_envs"),
    ("topology.learners=true", "topology.learners"),
    ("topology.actors=true", "topology.actors"),
    ("algo.lr=true", "algo.lr"),
])
def test_bool_not_accepted_for_numbers(override, key):
    msg = error_of(None, [override])
    assert f"'{key}'" in msg, msg


def test_unknown_env_name():
    msg = error_of(None, ["env.name=simple_sprea_v3"])
    assert "'env.name'" in msg and "simple_sprea_v3" in msg


def test_unknown_algo_name():
    msg = error_of(None, ["algo.name=sac"])
    assert "'algo.name'" in msg and "sac" in msg


@pytest.mark.parametrize("overrides,key", [
    (["algo.unroll_length=4", "env.num_envs=2", "algo.minibatches=9"], "algo.minibatches"),
    (["algo.minibatches=0"], "algo.minibatches"),
    (["algo.gamma=0"], "algo.gamma"),
    (["algo.gamma=1.5"], "algo.gamma"),
    (["algo.gae_lambda=-0.1"], "algo.gae_lambda"),
    (["algo.lr=0"], "algo.lr"),
    (["env.num_envs=0"], "env.num_envs"),
    (["topology.learners=0"], "topology.learners"),
    (["topology.actors=-1"], "topology.actors"),
    (["topology.actors=many"], "topology.actors"),
    (["learner.backend=nccl"], "learner.backend"),
    (["learner.device=tpu"], "learner.device"),
    (["learner.threads=0"], "learner.threads"),
    (["actors.threads=some"], "actors.threads"),
    (["output.trajectory_fraction=1.5"], "output.trajectory_fraction"),
    (["output.keep_checkpoints=0"], "output.keep_checkpoints"),
    (["train.total_env_steps=0"], "train.total_env_steps"),
    (["runtime.timeout_s=0"], "runtime.timeout_s"),
    (["name=a/b"], "name"),
    (["policy_map={}"], "policy_map"),
    (["policy_map.agent=[]"], "policy_map.agent"),
    (["output.loggers=[tensorboard,neptune]"], "output.loggers"),
    (["output.loggers=[wandb,wandb]"], "output.loggers"),
    (["output.wandb_mode=disabled"], "output.wandb_mode"),
    (["eval.every_env_steps=-1"], "eval.every_env_steps"),
    (["eval.episodes=0"], "eval.episodes"),
    (["eval.num_envs=-1"], "eval.num_envs"),
])
def test_inconsistent_values_name_key(overrides, key):
    msg = error_of(None, overrides)
    assert f"'{key}'" in msg, msg


@pytest.mark.parametrize("overrides,key,allowed", [
    (["actors.env_errors=ignore"], "actors.env_errors", "reset, abort"),
    (["learner.backend=nccl"], "learner.backend", "horovod, mpi"),
    (["algo.name=matrace", "algo.queue_full=block"], "algo.queue_full", "wait, drop"),
    (["algo.name=vdn", "algo.critic_input=1"], "algo.critic_input", "obs, state"),
    (["algo.encoder=MLP"], "algo.encoder", "mlp, conv"),
    (["env.name=kuhn_poker", "league.enabled=true", "league.seats=per_seat"], "league.seats",
     "auto, per_agent, per_team, per_group"),
])
def test_allowed_values_come_from_the_fields_type(overrides, key, allowed):
    """A field typed ``Literal[...]`` takes one of its values exactly (case and type count); the error names the key and
    every allowed value, which the reference page lists from the same type (no check written beside it)."""
    msg = error_of(None, overrides)
    assert f"config key '{key}': must be one of {allowed}, not " in msg, msg


@pytest.mark.parametrize("overrides,key", [
    (["algo.layers=0"], "algo.layers"),          # must not be reported as algo.hidden
    (["learner.device=cuda:x"], "learner.device"),  # torch.device('cuda:x') would only fail after MPI start
    (["learner.device=cuda:"], "learner.device"),
    (["seed=-1"], "seed"),                       # env reset(seed=-1) would only fail on the ranks
])
def test_values_that_would_fail_after_startup(overrides, key):
    msg = error_of(None, overrides)
    assert f"'{key}'" in msg, msg


def test_eval_is_refused_in_league_mode_naming_the_leagues_own():
    msg = error_of(os.path.join(ROOT, "configs", "league_spread.yaml"), ["eval.every_env_steps=1000"])
    assert "'eval.every_env_steps'" in msg and "league.eval_" in msg, msg


def test_valid_device_strings():
    for dev in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert load_config(None, [f"learner.device={dev}"]).learner.device == dev


def test_minibatch_bound_is_inclusive():
    cfg = load_config(None, ["algo.unroll_length=4", "env.num_envs=2", "algo.minibatches=8"])
    assert cfg.algo.minibatches == 8


@pytest.mark.parametrize("bad", ["algo.lr", "algo.lr 3e-4", "=3", "algo..lr=1", ".lr=1"])
def test_malformed_override(bad):
    msg = error_of(None, [bad])
    assert repr(bad) in msg


def test_override_through_non_section(tmp_path):
    # env.name is a string, not a section: the error names the key (whether or not a file set it)
    assert "'env.name" in error_of(None, ["env.name.x=1"])
    path = write_yaml(tmp_path, {"env": {"name": "simple_spread_v3"}})
    assert "'env.name" in error_of(path, ["env.name.x=1"])


def test_missing_config_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    msg = error_of(missing)
    assert missing in msg and "not found" in msg


def test_invalid_yaml_and_non_mapping(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("env: [unclosed\n")
    assert str(p) in error_of(str(p))
    p2 = tmp_path / "list.yaml"
    p2.write_text("- 1\n- 2\n")
    assert "mapping" in error_of(str(p2))


def test_empty_yaml_gives_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing\n")
    assert load_config(str(p)) == load_config(None)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def cli(*args):
    env = dict(os.environ)
    for var in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "hpcmarl.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("hpcmarl: error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, r.stderr)


def _check_layout_output(out, world, learners):
    assert "config OK" in out
    assert f"world size {world}: {learners} learner(s), {world - learners} actor(s)" in out
    for r in range(world):
        assert f"rank {r:>4}: " in out
    assert out.count(": learner") == learners
    assert out.count(": actor ") == world - learners


def test_cli_validate_ok_overrides_before_np():
    r = cli("validate", "configs/simple_spread_mappo.yaml", "topology.learners=2", "--np", "4")
    assert r.returncode == 0, r.stderr
    _check_layout_output(r.stdout, 4, 2)


def test_cli_validate_ok_overrides_after_np():
    # the documented form: options first, overrides after (as with `train`)
    r = cli("validate", "configs/simple_spread_mappo.yaml", "--np", "4", "topology.learners=2")
    assert r.returncode == 0, r.stderr
    _check_layout_output(r.stdout, 4, 2)


def test_cli_validate_unknown_key_before_np():
    r = cli("validate", "configs/simple_spread_mappo.yaml", "algo.lrr=1", "--np", "4")
    assert_one_line_error(r, "'algo.lrr'")


def test_cli_validate_unknown_key_after_np():
    r = cli("validate", "configs/simple_spread_mappo.yaml", "--np", "4", "algo.lrr=1")
    assert_one_line_error(r, "'algo.lrr'")


def test_cli_validate_too_many_learners_before_np():
    r = cli("validate", "configs/simple_spread_mappo.yaml", "topology.learners=4", "--np", "4")
    assert_one_line_error(r, "topology.learners=4", "4 rank")


def test_cli_validate_too_many_learners_after_np():
    r = cli("validate", "configs/simple_spread_mappo.yaml", "--np", "4", "topology.learners=4")
    assert_one_line_error(r, "topology.learners=4", "4 rank")


def test_cli_validate_missing_file():
    r = cli("validate", "configs/does_not_exist.yaml", "--np", "2")
    assert_one_line_error(r, "does_not_exist.yaml")


# ---- NIGT and actor heterogeneity -------------------------------------------------------------------
def test_nigt_config_and_delay_factors():
    cfg = load_config(None, ["algo.name=nigt", "algo.aggregation=malenia", "actors.delay=[1, 2.5]",
                             "actors.step_delay_s=0.001", "actors.variants=[{obs_scale: -1}, {env_kwargs: {N: 2}}]"])
    from hpcmarl.algos import base

    assert cfg.algo.aggregation == "malenia" and base.get(cfg.algo.name).flow == "gradients"
    assert C.delay_factors(cfg.actors.delay, 3) == [1.0, 2.5, 1.0]  # the list repeats
    assert C.delay_factors("straggler:10", 4) == [1.0, 1.0, 1.0, 10.0]
    assert C.delay_factors("sqrt", 3) == pytest.approx([1.0, 2 ** 0.5, 3 ** 0.5])
    assert C.delay_factors("equal", 2) == [1.0, 1.0]


@pytest.mark.parametrize("overrides,key", [
    (["algo.name=nigt", "algo.aggregation=fastest"], "algo.aggregation"),
    (["algo.name=nigt", "algo.momentum=0"], "algo.momentum"),
    (["algo.name=nigt", "algo.batch=0"], "algo.batch"),
    (["algo.name=nigt", "algo.lr=-1"], "algo.lr"),
    (["algo.name=nigt", "algo.clip=0.2"], "algo.clip"),  # a PPO key is unknown to NIGT
    (["actors.delay=straggler"], "actors.delay"),
    (["actors.delay=[1, -2]"], "actors.delay"),
    (["actors.step_delay_s=-1"], "actors.step_delay_s"),
    (["actors.variants=[{obs_scael: -1}]"], "actors.variants[0]"),
    (["actors.variants=[{reward_scale: big}]"], "actors.variants[0].reward_scale"),
])
def test_nigt_and_actor_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert f"'{key}" in str(e.value)


def test_derived_values_come_from_a_named_step_and_are_marked_in_the_saved_yaml():
    import yaml

    cfg = load_config(None, ["algo.name=qmix"])
    assert cfg.derived == {"algo.episode_limit": 25}  # simple_spread's max_cycles
    text = C.to_yaml(cfg)
    assert text.startswith("# derived: algo.episode_limit = 25\n")
    assert yaml.safe_load(text)["algo"]["episode_limit"] == 25
    assert load_config(None, ["env.name=simple_tag_v3"]).derived == {"algo.reward": "individual"}  # competitive
    assert load_config(None, ["algo.reward=team"]).derived == {}  # set by the user: not derived
    league = load_config(None, ["env.name=simple_tag_v3", "league.enabled=true"])
    assert league.derived["league.seats"] == "per_agent" and league.derived["league.outcome"] == "competitive"
    assert league.derived["league.groups.0.policy_group"] == "adversary"
    with pytest.raises(ConfigError, match="algo.episode_limit"):  # nothing to derive it from
        load_config(None, ["algo.name=qmix", "env.name=examples.walk_env:parallel_env"])


def test_env_parts_must_divide_the_copies_of_an_async_env():
    """env.parts (double-buffered sampling): a divisor of env.num_envs, and only for jaxmarl: envs."""
    assert load_config(None, ["env.name=jaxmarl:MPE_simple_spread_v3", "env.num_envs=8", "env.parts=2"]).env.parts == 2
    with pytest.raises(ConfigError, match="env.parts.*divide env.num_envs \\(8\\), got 3"):
        load_config(None, ["env.name=jaxmarl:MPE_simple_spread_v3", "env.num_envs=8", "env.parts=3"])
    with pytest.raises(ConfigError, match="env.parts.*must be 1 for simple_spread_v3"):
        load_config(None, ["env.num_envs=8", "env.parts=2"])
