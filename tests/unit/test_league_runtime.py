"""League mode without MPI: layouts, config checks, the seat environments, the league server's decisions,
pool files and the match command."""
import numpy as np
import pytest

from hpcmarl.config import ConfigError, load_config
from hpcmarl.league.pool import LOOKAHEAD, RANDOM, PolicyBank, policy_from, read_policy, write_snapshot
from hpcmarl.league.seats import SELF, Opponents, SeatVecEnv
from hpcmarl.league.server import League, live_id
from hpcmarl.topology import ACTOR, LEAGUE, LEARNER, TopologyError, make_league_layout

C4 = ["env.name=connect_four_v3", "league.enabled=true", "algo.name=ippo"]


# ---- layout ------------------------------------------------------------------------------------------
def test_league_layout_groups_and_league_rank():
    lay = make_league_layout(8, [("a", 2, 3), ("b", 1, 0)])  # b gets the 1 actor left over
    assert lay.groups == (("a", 2, 3), ("b", 1, 1)) and lay.league_rank == 7
    assert [lay.role(r) for r in range(8)] == [LEARNER] * 3 + [ACTOR] * 4 + [LEAGUE]
    assert [lay.group_of(r) for r in range(7)] == [0, 0, 1, 0, 0, 0, 1]
    assert [lay.learner_of(i) for i in range(4)] == [0, 1, 0, 2]  # inside its group, j mod L_g
    assert lay.actors_of(0) == [3, 5] and lay.actors_of(2) == [6]
    assert "league" in lay.describe() and "[group b]" in lay.describe()


def test_league_layout_auto_split_and_errors():
    lay = make_league_layout(6, [("a", 1, 0), ("b", 1, 0)])
    assert lay.groups == (("a", 1, 2), ("b", 1, 1))
    with pytest.raises(TopologyError, match="at least 3 ranks"):
        make_league_layout(2, [("a", 1, 0)])
    with pytest.raises(TopologyError, match="launch 5"):
        make_league_layout(4, [("a", 2, 2)])
    with pytest.raises(TopologyError, match="every learner needs"):
        make_league_layout(6, [("a", 2, 1), ("b", 1, 1)])


# ---- config --------------------------------------------------------------------------------------------
def test_league_config_defaults_and_errors():
    cfg = load_config(None, C4)
    assert cfg.league.seats == "per_agent" and cfg.league.groups[0].policy_group == "player"
    assert cfg.league.eval_baselines == ["random", "lookahead"]
    with pytest.raises(ConfigError, match="turn-based"):
        load_config(None, ["env.name=connect_four_v3"])
    with pytest.raises(ConfigError, match="policy_group"):
        load_config(None, C4 + ["league.groups.0.policy_group=nobody"])
    with pytest.raises(ConfigError, match="lookahead"):
        load_config(None, ["env.name=simple_tag_v3", "league.enabled=true", "league.eval_baselines=[lookahead]"])
    with pytest.raises(ConfigError, match="topology"):
        load_config(None, C4 + ["topology.learners=2"])
    assert load_config(None, C4 + ["topology.learners=1"]).league.enabled
    with pytest.raises(ConfigError, match="opponent_cache"):
        load_config(None, C4 + ["league.opponent_cache=0"])
    with pytest.raises(ConfigError, match="league.groups.3"):
        load_config(None, C4 + ["league.groups.3.strategy=pfsp"])
    with pytest.raises(ConfigError, match="algo.name"):
        load_config(None, C4[:2] + ["algo.name=matrace"])
    # a cooperative league has team returns per partner, no win rates: pfsp would be silently uniform
    spread = ["env.name=simple_spread_v3", "league.enabled=true"]
    with pytest.raises(ConfigError, match="league.groups.0.strategy.*win rate"):
        load_config(None, spread + ["league.groups.0.strategy=pfsp"])
    assert load_config(None, spread + ["league.groups.0.strategy=uniform"]).league.outcome == "cooperative"
    tag = load_config(None, ["env.name=simple_tag_v3", "league.enabled=true",
                             "league.groups=[{name: pred, policy_group: adversary}, {name: prey, policy_group: agent},"
                             " {name: x, policy_group: adversary, strategy: exploiter, exploits: prey}]"])
    assert tag.league.seats == "per_group" and tag.league.eval_baselines == ["random"]
    with pytest.raises(ConfigError, match="exploits"):
        load_config(None, C4 + ["league.groups=[{name: m}, {name: e, strategy: exploiter, exploits: e}]"])


# ---- seat environments -------------------------------------------------------------------------------
class Column(Opponents):
    """Plays the leftmost legal column; records every call."""

    def __init__(self):
        self.calls = []

    def act(self, member, group, obs, mask):
        self.calls.append((member, group, len(obs)))
        return np.array([int(np.flatnonzero(m)[0]) for m in mask])


def test_aec_seats_rotate_and_rewards_reach_the_trained_seat():
    opp = Column()
    env = SeatVecEnv("connect_four_v3", 2, 0, {}, None, "player", "main", "per_agent", lambda i: {"player": 7}, opp)
    env.reset()
    assert env.spec.groups[0].n == 1 and env.spec.groups[0].obs_dim == 84
    # copy 0: trained seat player_0 moves first (empty board); copy 1: player_1, the opponent already moved
    assert env.trained == [["player_0"], ["player_1"]]
    board = env.obs["main"][:, 0].reshape(2, 6, 7, 2)
    assert board[0].sum() == 0 and board[1, 5, 0, 1] == 1  # the opponent's piece, seen as "theirs"
    results = []
    for _ in range(12):  # the trained seat stacks column 6; the opponent stacks column 0 and wins first in copy 1
        rew, term, trunc, fin = env.step({"main": np.full((2, 1), 6)})
        for ep in fin:
            assert rew["main"][ep.env, 0] == ep.returns["main"] and term["main"][ep.env, 0]
            results.append((ep.env, ep.seat, ep.score, ep.length, ep.members))
    # copy 1: the opponent moves first and completes four in column 0 after the trained seat's 3rd move;
    # copy 0: the trained seat moves first and completes four in column 6 on its 4th move
    assert results[0] == (1, 1, 0.0, 3, {"player": 7}) and results[1] == (0, 0, 1.0, 4, {"player": 7})
    assert env.trained[0] == ["player_1"] and env.trained[1] == ["player_0"]  # seats rotate per episode
    assert all(m == 7 and g == "player" for m, g, _ in opp.calls)
    assert max(n for _, _, n in opp.calls) == 2  # one batched call for both copies


def test_parallel_per_group_seats_simple_tag():
    class Still(Opponents):
        def act(self, member, group, obs, mask):
            assert group == "agent" and obs.shape[1] == 14 and member == 3
            return np.zeros(len(obs), np.int64)

    env = SeatVecEnv("simple_tag_v3", 2, 0, {"max_cycles": 5}, None, "adversary", "pred", "per_group",
                     lambda i: {"agent": 3}, Still())
    env.reset()
    assert env.obs["pred"].shape == (2, 3, 16) and env.alive["pred"].all()
    total = np.zeros(2)
    for t in range(5):
        rew, term, trunc, fin = env.step({"pred": np.random.default_rng(t).integers(0, 5, (2, 3))})
        total += rew["pred"].sum(1)
    assert len(fin) == 2 and all(trunc["pred"].all(1)) and [ep.length for ep in fin] == [5, 5]
    assert np.allclose([ep.returns["pred"] for ep in fin], total)


# ---- team games (battle_v4): per_team seats, survivors decide, the charge baseline ------------------------
BATTLE = ["env.name=battle_v4", "league.enabled=true", "algo.name=ippo"]


def test_team_game_config():
    cfg = load_config(None, BATTLE)
    assert cfg.league.seats == "per_team" and cfg.league.eval_baselines == ["random", "charge"]
    two = load_config(None, BATTLE + ["policy_map={red: [red_*], blue: [blue_*]}",
                                      "league.groups=[{name: r, policy_group: red}, {name: b, policy_group: blue}]"])
    assert two.league.seats == "per_group"
    with pytest.raises(ConfigError, match="per_team needs a team game"):
        load_config(None, ["env.name=simple_spread_v3", "league.enabled=true", "league.seats=per_team"])
    with pytest.raises(ConfigError, match="charge baseline plays battle_v4"):
        load_config(None, C4 + ["league.pool_baselines=[charge]"])


def test_charge_attacks_adjacent_enemies_and_moves_towards_far_ones():
    from hpcmarl.league.scripted import ATTACKS, MOVES, charge_actions

    obs = np.zeros((4, 13, 13, 5), np.float32)
    obs[0, 6 + 1, 6 - 1, 3] = 1  # enemy at dx=-1, dy=+1 (adjacent)
    obs[1, 6, 6 + 4, 3] = 1  # enemy 4 cells to the right, nothing in the way
    obs[2, 6, 6 + 4, 3] = 1
    obs[2, 6, 6 + 2, 0] = 1  # ... a wall on the straight path
    a = charge_actions(obs, np.random.default_rng(0))
    assert a[0] == len(MOVES) + ATTACKS.index((-1, 1))
    assert MOVES[a[1]] == (2, 0) and MOVES[a[2]] == (1, 0)  # the free cell closest to the enemy
    assert 0 <= a[3] < len(MOVES)  # nobody in view: a random move


def test_team_seats_alternate_and_survivors_decide_battle():
    """2 vs 2 battle: the trained team (random actions) against the scripted charge team, which wipes it out;
    the trained side alternates red/blue per episode and the episode is lost on survivors."""
    from hpcmarl.league.pool import CHARGE

    env = SeatVecEnv("battle_v4", 2, 0, {"map_size": 12, "max_cycles": 150}, None, "soldier", "main", "per_team",
                     lambda i: {"soldier": CHARGE}, PolicyBank(None, np.random.default_rng(0)))
    env.reset()
    assert env.obs["main"].shape == (2, 2, 13 * 13 * 5) and env.spec.groups[0].obs_shape == (13, 13, 5)
    assert env.trained == [["red_0", "red_1"], ["blue_0", "blue_1"]]
    rng, finished = np.random.default_rng(1), []
    for _ in range(400):
        finished += env.step({"main": rng.integers(0, 21, (2, 2))})[3]
        if len(finished) >= 4:
            break
    assert len(finished) >= 4
    for ep in finished:
        assert ep.alive == 0 and ep.other_alive > 0 and ep.score == 0.0 and ep.length < 150, ep
        assert ep.members == {"soldier": CHARGE}
    assert {(ep.env, ep.seat) for ep in finished[:4]} == {(0, 0), (1, 1), (0, 1), (1, 0)}  # red, then blue


def test_env_without_its_package_names_the_install_step(monkeypatch):
    from hpcmarl import envs

    monkeypatch.setitem(envs.REGISTRY, "fake_v0", envs.EnvEntry("hpcmarl_no_such_pkg.mod:env", {"a": ["*"]},
                                                               install="pip install hpcmarl-no-such-pkg"))
    with pytest.raises(envs.EnvError, match="needs the Python package 'hpcmarl_no_such_pkg': pip install hpcmarl-no"):
        envs.make_env("fake_v0")


# ---- the league server --------------------------------------------------------------------------------
def league(tmp_path, *overrides):
    return League(load_config(None, C4 + list(overrides)), str(tmp_path), seed=0)


def params(n=10):
    return np.zeros(n, np.float32)


ATTRS = {"group": "main", "policy_group": "player", "env": "connect_four_v3", "obs_dim": 84, "n_actions": 7,
         "hidden": 8, "layers": 1}


def test_snapshot_times(tmp_path):
    lg = league(tmp_path, "league.groups.0.snapshot_every=10", "league.groups.0.snapshot_win_rate=0.7",
                "league.groups.0.snapshot_min_updates=3")
    assert lg.snapshot_due(0, 1)  # an empty pool takes the first policy
    lg.add_member(0, 1, 1, params(), {**ATTRS, "version": 1})
    assert not lg.snapshot_due(0, 5) and lg.snapshot_due(0, 11)
    lg.report(0, [(0, 1.0, 1.0)] * 40)  # beats the pool: win-rate snapshot after min_updates
    assert lg.win_rate_vs_pool(0) > 0.7 and not lg.snapshot_due(0, 3) and lg.snapshot_due(0, 4)


def test_assignment_mixes_self_play_and_pfsp(tmp_path):
    lg = league(tmp_path, "league.groups.0.self_play=0.25")
    assert lg.assignment(0) == {"player": [(SELF, 1.0)]}  # nothing in the pool yet
    for v in (1, 2, 3):
        lg.add_member(0, v, v, params(), {**ATTRS, "version": v})
    lg.report(0, [(0, 1.0, 1.0)] * 30 + [(1, 0.0, -1.0)] * 30)  # member 0 is easy, member 1 hard
    a = dict(lg.assignment(0)["player"])
    x = np.array([lg.recent.get((0, m), 0.5) for m in (0, 1, 2)])
    want = (1 - x) ** 2 / ((1 - x) ** 2).sum() * 0.75
    assert a[SELF] == 0.25 and np.allclose([a[m] for m in (0, 1, 2)], want)
    assert abs(sum(a.values()) - 1) < 1e-12 and a[1] > a[2] > a[0]
    assert set(lg.paths(lg.assignment(0))) == {0, 1, 2}


def test_self_play_and_exploiter_assignments(tmp_path):
    lg = league(tmp_path, "league.groups=[{name: main}, {name: expl, strategy: exploiter}]")
    assert lg.assignment(1) == {"player": [(SELF, 1.0)]}
    lg.add_member(0, 4, 4, params(), {**ATTRS, "version": 4})
    lg.add_member(1, 4, 4, params(), {**ATTRS, "group": "expl", "version": 4})
    lg.add_member(0, 9, 9, params(), {**ATTRS, "version": 9})
    assert lg.assignment(1) == {"player": [(2, 1.0)]}  # always main's newest snapshot
    sp = league(tmp_path / "sp", "league.groups.0.strategy=self_play")
    sp.add_member(0, 1, 1, params(), {**ATTRS, "version": 1})
    assert sp.assignment(0) == {"player": [(SELF, 1.0)]}


def test_asymmetric_assignment_uses_the_other_lineage(tmp_path):
    cfg = load_config(None, ["env.name=simple_tag_v3", "league.enabled=true", "league.groups=[{name: pred, "
                             "policy_group: adversary, strategy: self_play}, {name: prey, policy_group: agent}]"])
    lg = League(cfg, str(tmp_path))
    assert lg.assignment(0) == {"agent": [(RANDOM, 1.0)]}  # no prey snapshot yet: random moves
    lg.add_member(1, 1, 1, params(), {**ATTRS, "group": "prey", "version": 1})
    lg.add_member(1, 2, 2, params(), {**ATTRS, "group": "prey", "version": 2})
    assert lg.assignment(0) == {"agent": [(1, 1.0)]}  # self_play: the prey's newest
    assert lg.lineage("agent") == [0, 1] and lg.opponent_groups(1) == ["adversary"]


def test_reports_rows_ratings_and_state_round_trip(tmp_path):
    lg = league(tmp_path)
    lg.add_member(0, 1, 1, params(), {**ATTRS, "version": 1})
    lg.report(0, [(0, 1.0, 1.0), (0, 0.5, 0.0), (SELF, 0.0, -1.0), (0, 0.0, -1.0), (0, 1.0, 1.0)])
    assert lg.games == 4 and lg.self_games == 1
    assert list(lg.payoff.counts("main(live)", "main-v1")) == [2, 1, 1]
    lg.record_eval(0, LOOKAHEAD, 1, 0, 3)
    rows = lg.take_rows(7)
    assert rows["league/matches"] == [(7, rows["league/matches"][0][1], 0, 0, 2.0, 1.0, 1.0, 1.0)]
    assert {r[2] for r in rows["league/ratings"]} == {live_id(0), 0, RANDOM, LOOKAHEAD} - {RANDOM}
    assert rows["league/eval"][0][2:] == (0, LOOKAHEAD, 1, 0, 3, 0.0) and len(rows["league/pool"]) == 1
    assert lg.take_rows(8)["league/matches"] == []  # rows are handed out once
    again = league(tmp_path)
    again.load_state_arrays(lg.state_arrays())
    assert again.members[0]["path"] == lg.members[0]["path"] and again.games == 4
    assert again.ratings.elo == pytest.approx(lg.ratings.elo)
    assert list(again.payoff.counts("main-v1", "lookahead")) == [1, 0, 3]
    assert again.recent == lg.recent and again.last_snapshot == [1]
    assert lg.eval_queue and again.eval_queue == lg.eval_queue  # evaluations still due survive a resume
    old = {k: v for k, v in lg.state_arrays().items() if k != "league/eval_queue"}  # older checkpoints
    third = league(tmp_path)
    third.load_state_arrays(old)
    assert third.eval_queue == [] and third.games == 4


# ---- pool files ----------------------------------------------------------------------------------------
def test_snapshot_file_round_trip_and_bank(tmp_path):
    from hpcmarl.envs import EnvSpec, GroupSpec
    from hpcmarl.models import Inference, flat_params

    spec = EnvSpec("connect_four_v3", [GroupSpec("main", ["player_0"], 84, True, n_actions=7)], 0)
    inf = Inference(spec, 8, 1)
    flat = flat_params(inf.params)
    path = write_snapshot(str(tmp_path / "pool" / "m.h5"), flat, {**ATTRS, "version": 3})
    got, attrs = read_policy(path)
    assert np.array_equal(got, flat) and attrs["version"] == 3 and attrs["kind"] == "hpcmarl-pool"
    again = policy_from(got, attrs)
    obs = np.random.default_rng(0).random((5, 84)).astype(np.float32)
    mask = np.ones((5, 7), bool)
    mask[:, 3] = False
    bank = PolicyBank(inf, np.random.default_rng(0), greedy=True)
    bank.paths[0] = path
    assert np.array_equal(bank.act(0, "player", obs, mask), bank.act(SELF, "player", obs, mask))
    assert not np.any(bank.act(RANDOM, "player", obs, mask) == 3)
    assert not np.any(bank.act(0, "player", obs, mask) == 3)
    assert np.allclose(flat_params(again.params), flat)
    with pytest.raises(KeyError):
        bank.act(5, "player", obs, mask)
    # league.opponent_cache: at most `capacity` loaded policies, the least recently used dropped and re-read later
    small = PolicyBank(None, np.random.default_rng(0), greedy=True, capacity=2)
    small.paths.update({m: path for m in range(4)})
    for m in (0, 1, 0, 2, 3):
        small.policy(m)
    assert list(small.cache) == [2, 3]
    assert np.array_equal(small.act(0, "player", obs, mask), bank.act(0, "player", obs, mask)) and len(small.cache) == 2


def test_play_episode_opening_moves_are_seeded():
    from hpcmarl.envs import make_env
    from hpcmarl.league.aec import play_episode

    env = make_env("connect_four_v3")
    first = lambda obs: int(np.flatnonzero(obs["action_mask"])[0])
    a = play_episode(env, {"player_0": first, "player_1": first}, seed=3, opening=4)
    b = play_episode(env, {"player_0": first, "player_1": first}, seed=3, opening=4)
    plain = play_episode(env, {"player_0": first, "player_1": first}, seed=3)
    assert a == b and plain == {"player_0": 1.0, "player_1": -1.0}  # column 0 for both: the first player wins


def test_league_evaluation_opens_pool_games_with_random_moves(tmp_path):
    """Two greedy snapshots replay one game per seat; eval_opening random moves make the games differ."""
    import torch

    from hpcmarl.envs import EnvSpec, GroupSpec
    from hpcmarl.models import Inference, flat_params
    from hpcmarl.roles.league import EvalGame

    spec = EnvSpec("connect_four_v3", [GroupSpec("main", ["player_0"], 84, True, n_actions=7)], 0)
    bank = PolicyBank(None, np.random.default_rng(0), greedy=True)
    for v in (0, 1):
        torch.manual_seed(v)
        bank.paths[v] = write_snapshot(str(tmp_path / f"m{v}.h5"), flat_params(Inference(spec, 8, 1).params),
                                       {**ATTRS, "version": v})
    boards = {}
    for opening in (0, 2):
        game = EvalGame(load_config(None, C4 + ["league.eval_games=8", f"league.eval_opening={opening}"]), 0, 1, bank)
        seen, done = set(), False
        while not done:
            done = game.step()
            seen.add(np.asarray(game.env.unwrapped.board).tobytes())
        boards[opening] = seen
        assert sum(game.wdl) == 8
    assert len(boards[0]) <= 2 < len(boards[2])
    vs_random = EvalGame(load_config(None, C4), 0, RANDOM, bank)
    assert vs_random.opening == 0  # baselines are not deterministic: their games start normally


def test_conv_encoder_on_the_board():
    """algo.encoder=conv: the learner's policy and the actors' Inference share one parameter layout; the
    convolution sees the board as (channels, rows, columns); non-image observations are refused."""
    import torch

    from hpcmarl.algos.base import make_inference
    from hpcmarl.algos.ppo import PPOLearner
    from hpcmarl.league.seats import league_spec
    from hpcmarl.models import Board, flat_params

    cfg = load_config(None, C4 + ["algo.encoder=conv", "algo.hidden=16", "algo.layers=1"])
    spec = league_spec(cfg, 0)
    assert spec.groups[0].obs_shape == (6, 7, 2)
    learner = PPOLearner(spec, cfg.algo, torch.device("cpu"), 0)
    inf = make_inference(spec, cfg.algo)
    inf.load(learner.policy_flat(), 1)
    assert np.array_equal(flat_params(inf.params), learner.policy_flat())
    obs = np.random.default_rng(0).integers(0, 2, (3, 1, 84)).astype(np.float32)
    mask = np.ones((3, 1, 7), bool)
    a, logp = inf.act({"main": obs}, {"main": mask}, greedy=True)
    with torch.no_grad():
        want = learner.model.policies["main"].dist(torch.from_numpy(obs)).logits.argmax(-1).numpy()
    assert np.array_equal(a["main"], want)
    b = Board((6, 7, 2), channels=1)
    with torch.no_grad():
        b.conv[0].weight.zero_()
        b.conv[0].bias.zero_()
        b.conv[0].weight[0, 1, 1, 1] = 1.0  # the centre tap of channel 1 (the opponent's pieces)
        b.conv[2].weight.zero_()
        b.conv[2].bias.zero_()
        b.conv[2].weight[0, 0, 1, 1] = 1.0
    x = torch.zeros(6, 7, 2)
    x[5, 3, 1] = 1.0
    assert torch.equal(b(x.reshape(1, -1)).reshape(6, 7), x[:, :, 1])
    with pytest.raises(ValueError, match="image observations"):
        Board((18,))


def test_scripted_pool_members(tmp_path):
    """league.pool_baselines: matchmaking may pick the scripted players, which the actors' bank plays."""
    lg = league(tmp_path, "league.pool_baselines=[lookahead]", "league.groups.0.self_play=0")
    assert lg.assignment(0) == {"player": [(LOOKAHEAD, 1.0)]}
    lg.add_member(0, 1, 1, params(), {**ATTRS, "version": 1})
    assert ([m for m, _ in lg.assignment(0)["player"]] == [0, LOOKAHEAD]
            and lg.paths(lg.assignment(0)) == {0: lg.members[0]["path"]})
    board = np.zeros((6, 7, 2), np.float32)
    board[5, 0:3, 0] = 1  # three in the bottom row for the player to move: column 3 wins
    bank = PolicyBank(None, np.random.default_rng(0))
    assert bank.act(LOOKAHEAD, "player", board.reshape(1, -1), np.ones((1, 7), bool))[0] == 3
    with pytest.raises(ConfigError, match="pool_baselines"):
        load_config(None, ["env.name=simple_tag_v3", "league.enabled=true", "league.pool_baselines=[lookahead]"])


def test_cooperative_league_records_team_returns_not_ratings(tmp_path):
    cfg = load_config(None, ["env.name=simple_spread_v3", "league.enabled=true", "league.groups.0.strategy=uniform"])
    assert cfg.league.outcome == "cooperative" and cfg.league.seats == "per_agent"
    lg = League(cfg, str(tmp_path))
    lg.add_member(0, 1, 1, params(), {**ATTRS, "version": 1})
    lg.report(0, [(0, 0.5, -60.0), (0, 0.5, -40.0), (SELF, 0.5, -30.0)])
    lg.record_eval(0, RANDOM, 0, 5, 0, return_sum=-500.0)
    rows = lg.take_rows(3)
    assert rows["league/matches"] == [(3, rows["league/matches"][0][1], 0, 0, 0.0, 2.0, 0.0, -100.0)]
    assert rows["league/ratings"] == [] and lg.payoff.games("main(live)", "main-v1") == 0
    assert rows["league/eval"][0][2:] == (0, RANDOM, 0, 5, 0, -500.0)


def test_cooperative_seats_report_the_team_return():
    class Still(Opponents):
        def act(self, member, group, obs, mask):
            return np.zeros(len(obs), np.int64)

    env = SeatVecEnv("simple_spread_v3", 1, 0, {"max_cycles": 4}, None, "agent", "main", "per_agent",
                     lambda i: {"agent": 2}, Still())
    env.reset()
    assert env.obs["main"].shape == (1, 1, 18)
    for _ in range(4):
        rew, term, trunc, fin = env.step({"main": np.zeros((1, 1), np.int64)})
    (ep,) = fin
    assert ep.members == {"agent": 2} and ep.team_return == pytest.approx(ep.returns["main"] + 2 * ep.other_return)


def test_pool_max_and_ratings_rows_are_bounded(tmp_path):
    lg = league(tmp_path, "league.pool_max=2", "league.ratings_every=5", "league.groups.0.self_play=0")
    for v in (1, 2, 3):
        lg.add_member(0, v, v, params(), {**ATTRS, "version": v})
    assert [m for m, _ in lg.assignment(0)["player"]] == [1, 2]  # only the newest two are offered
    lg.report(0, [(1, 1.0, 1.0)])
    first = lg.take_rows(1)["league/ratings"]
    assert sorted(r[2] for r in first) == [live_id(0), 0, 1, 2]  # every member once, at first
    lg.report(0, [(2, 0.0, -1.0)])
    assert lg.take_rows(3)["league/ratings"] == []  # not yet ratings_every updates later
    assert sorted(r[2] for r in lg.take_rows(6)["league/ratings"]) == [live_id(0), 2]
    lg.report(0, [(2, 1.0, 1.0)])
    assert len(lg.take_rows(7, final=True)["league/ratings"]) == 2  # the last rows are always written


# ---- crashing environments in league seats (actors.env_errors) ------------------------------------------
class Still(Opponents):
    def act(self, member, group, obs, mask):
        return np.zeros(len(obs), np.int64)


def test_a_crashing_seat_env_copy_is_recreated_and_its_episode_discarded():
    kw = {"max_cycles": 4, "crash_at": 6}  # every instance raises in its 6th step(): the 2nd episode, step 2
    env = SeatVecEnv("counting_v0", 2, 0, kw, None, "agent", "main", "per_agent", lambda i: {"agent": 1}, Still(),
                     on_error="reset", max_errors=10)
    env.reset()
    finished, crashed = [], 0
    for t in range(10):  # a re-created instance would raise again at its own 6th step (t = 11)
        before = env.obs["main"].copy()
        rew, term, trunc, fin = env.step({"main": np.zeros((2, 1), np.int64)})
        finished += fin
        if env.failed:
            crashed += 1
            assert env.failed == [0, 1] and t == 5  # both copies reach their 6th step() together
            assert trunc["main"].all() and not term["main"].any() and not rew["main"].any()
            np.testing.assert_array_equal(env.final_obs["main"], before)  # cut at the last observation
            assert not any(ep.env in env.failed for ep in fin)
            assert (env._ep_len == 0).all()
    assert crashed == 1 and env.errors == 2
    assert all(ep.length == 4 for ep in finished) and len(finished) == 2 + 2  # 1st episodes + after the crash
    with pytest.raises(RuntimeError, match="crashed in step call 6"):  # the default: abort
        ab = SeatVecEnv("counting_v0", 1, 0, kw, None, "agent", "main", "per_agent", lambda i: {"agent": 1}, Still())
        ab.reset()
        for _ in range(6):
            ab.step({"main": np.zeros((1, 1), np.int64)})


def test_a_crashing_turn_based_copy_restarts_with_the_opponents_opening():
    opp = Column()
    env = SeatVecEnv("connect_four_v3", 2, 0, {}, None, "player", "main", "per_agent", lambda i: {"player": 7}, opp,
                     on_error="reset", max_errors=1)

    def boom(action):
        raise ValueError("board on fire")

    env.reset()
    env.envs[1].step = boom
    rew, term, trunc, fin = env.step({"main": np.full((2, 1), 6)})
    assert env.failed == [1] and env.errors == 1 and not fin and trunc["main"][1, 0] and not trunc["main"][0, 0]
    # copy 1 plays a new episode from a new env instance: the trained seat's turn again, the board as the opening
    # left it
    assert env.envs[1].step is not boom and env.alive["main"][1, 0] and env._ep_len[1] == 0
    env.envs[0].step = boom
    with pytest.raises(RuntimeError, match="more than actors.max_env_errors=1"):
        env.step({"main": np.full((2, 1), 6)})
