"""League building blocks: PFSP / matchmaking distributions, payoff, Elo and OpenSkill ratings, scripted
Connect Four players and the AEC actor loop on ``connect_four_v3`` (no MPI)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from openskill.models import PlackettLuce
from pettingzoo.classic.connect_four.connect_four import env as connect_four_v3  # no deprecation warning

from hpcmarl.league.aec import play_episode, play_matches
from hpcmarl.league.matchmaking import Matchmaker, Payoff, pfsp_weights
from hpcmarl.league.ratings import Ratings, elo_update
from hpcmarl.league.scripted import drop_row, lookahead_player, random_player, wins


# ------------------------------------------------------------------------------------------------
# PFSP weights and matchmaking
# ------------------------------------------------------------------------------------------------
def test_pfsp_weights_match_the_formulas():
    x = np.array([0.0, 0.1, 0.35, 0.5, 0.9, 1.0])
    for p in (1.0, 2.0, 3.0):
        f = [(1 - xi) ** p for xi in x]
        np.testing.assert_allclose(pfsp_weights(x, "squared", p), [fi / sum(f) for fi in f], rtol=1e-12)
    f = [xi * (1 - xi) for xi in x]
    np.testing.assert_allclose(pfsp_weights(x, "variance"), [fi / sum(f) for fi in f], rtol=1e-12)
    f = [1 - xi for xi in x]
    np.testing.assert_allclose(pfsp_weights(x, "linear"), [fi / sum(f) for fi in f], rtol=1e-12)
    # hard opponents (low win rate) get the most weight under "squared"; "variance" peaks at 0.5
    assert np.argmax(pfsp_weights(x)) == 0 and np.argmax(pfsp_weights(x, "variance")) == 3


def test_pfsp_weights_fall_back_to_uniform():
    np.testing.assert_allclose(pfsp_weights(np.ones(4)), np.full(4, 0.25))
    np.testing.assert_allclose(pfsp_weights(np.array([0.0, 1.0, 1.0]), "variance"), np.full(3, 1 / 3))
    with pytest.raises(ValueError, match="squared"):
        pfsp_weights(np.ones(2), "cubic")


def assert_frequencies(draws, pool, probs, n):
    """Empirical frequency of each pool member within 5 binomial standard deviations of ``probs``."""
    for m, p in zip(pool, probs):
        freq = draws.count(m) / n
        assert abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12, (m, freq, p)


@pytest.mark.parametrize("weighting,p", [("squared", 2.0), ("squared", 1.0), ("variance", 2.0), ("linear", 2.0)])
def test_pfsp_matchmaker_frequencies(weighting, p):
    pool = ["s0", "s1", "s2", "s3", "s4"]
    rates = {"s0": 0.05, "s1": 0.3, "s2": 0.5, "s3": 0.8, "s4": 1.0}
    f = {"squared": lambda x: (1 - x) ** p, "variance": lambda x: x * (1 - x), "linear": lambda x: 1 - x}[weighting]
    expected = [f(rates[m]) / sum(f(rates[k]) for k in pool) for m in pool]
    mm = Matchmaker("pfsp", np.random.default_rng(1), weighting=weighting, p=p)
    n = 20000
    draws = [mm.choose(pool, "main", rates.__getitem__) for _ in range(n)]
    assert_frequencies(draws, pool, expected, n)
    assert "s4" not in draws  # always beaten: weight 0 under every weighting


def test_uniform_matchmaker_frequencies():
    pool = [f"s{i}" for i in range(5)]
    mm = Matchmaker("uniform", np.random.default_rng(2))
    n = 20000
    draws = [mm.choose(pool, "main", lambda m: 1.0 if m == "s0" else 0.0) for _ in range(n)]
    assert_frequencies(draws, pool, [0.2] * 5, n)


def test_pfsp_matchmaker_uses_payoff_win_rates():
    payoff = Payoff()
    for _ in range(9):
        payoff.record("main", "easy", 1)
        payoff.record("main", "hard", 0)
    mm = Matchmaker("pfsp", np.random.default_rng(3))
    draws = [mm.choose(["easy", "hard"], "main", lambda m: payoff.win_rate("main", m)) for _ in range(4000)]
    # win rates with one prior game at 0.5: easy 9.5 / 10, hard 0.5 / 10 -> weights 0.05^2 : 0.95^2
    p_hard = 0.95**2 / (0.95**2 + 0.05**2)
    assert_frequencies(draws, ["easy", "hard"], [1 - p_hard, p_hard], 4000)


def test_self_play_exploiter_and_empty_pool():
    pool = ["s0", "s1", "s2"]
    for strategy in ("self_play", "exploiter"):
        mm = Matchmaker(strategy, np.random.default_rng(0))
        assert {mm.choose(pool, "main_v7", lambda m: 0.5) for _ in range(50)} == {"main_v7"}
    for strategy in ("uniform", "pfsp"):
        assert Matchmaker(strategy, np.random.default_rng(0)).choose([], "main_v7", lambda m: 0.5) == "main_v7"


def test_matchmaker_rejects_bad_strategy_and_options():
    with pytest.raises(ValueError) as err:
        Matchmaker("league", np.random.default_rng(0))
    assert all(s in str(err.value) for s in ("self_play", "uniform", "pfsp", "exploiter"))
    with pytest.raises(ValueError):
        Matchmaker("pfsp", np.random.default_rng(0), weighting="cubic")
    with pytest.raises(ValueError):
        Matchmaker("uniform", np.random.default_rng(0), weighting="squared")


# ------------------------------------------------------------------------------------------------
# Payoff
# ------------------------------------------------------------------------------------------------
def test_payoff_counts_both_directions_and_draws_count_half():
    pay = Payoff()
    for outcome in (1, 0.5, 0, 1):
        pay.record("a", "b", outcome)
    pay.record("c", "a", 1)
    assert pay.games("a", "b") == pay.games("b", "a") == 4 and pay.games("b", "c") == 0
    assert list(pay.counts("a", "b")) == [2, 1, 1] and list(pay.counts("b", "a")) == [1, 1, 2]
    assert pay.win_rate("a", "b") == pytest.approx((2 + 0.5 + 0.5) / 5)
    assert pay.win_rate("b", "a") == pytest.approx((1 + 0.5 + 0.5) / 5)
    assert pay.win_rate("a", "b", prior_games=0.0) == pytest.approx(2.5 / 4)
    assert pay.win_rate("b", "c") == 0.5 and pay.win_rate("b", "c", prior=0.3) == pytest.approx(0.3)
    m = pay.matrix(["a", "b", "c"])
    assert m.shape == (3, 3) and m[0, 1] == pytest.approx(0.6) and m[2, 0] == pytest.approx(1.5 / 2)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose((m + m.T)[off], 1.0)  # symmetric prior -> zero-sum matrix
    with pytest.raises(ValueError):
        pay.record("a", "b", 2)


def test_payoff_state_round_trip():
    pay = Payoff()
    for a, b, o, r in [("a", "b", 1, 2.0), ("a", "b", 0.5, 0.0), ("c", "b", 0, -1.0), ("a", "c", 1, 3.0)]:
        pay.record(a, b, o, r)
    ids, counts, returns = pay.state_arrays()
    assert counts.dtype == np.int64 and counts.shape == (3, 3, 3) and returns.shape == (3, 3)
    back = Payoff()
    back.load_state_arrays(list(np.array(ids, dtype="S")), counts.copy(), returns.copy())
    for a in "abc":
        for b in "abc":
            assert list(back.counts(a, b)) == list(pay.counts(a, b))
            assert back.mean_return(a, b) == pay.mean_return(a, b)
    assert pay.mean_return("a", "b") == 1.0 and pay.mean_return("b", "a") == -1.0 and pay.mean_return("b", "c") == 1.0


# ------------------------------------------------------------------------------------------------
# Ratings
# ------------------------------------------------------------------------------------------------
def test_elo_against_hand_computed_values():
    assert elo_update(1000, 1000, 1.0) == pytest.approx((1016.0, 984.0))
    assert elo_update(1000, 1000, 0.5) == pytest.approx((1000.0, 1000.0))
    # 1200 vs 1000: E_a = 1 / (1 + 10^-0.5) = 0.7597469266; a loses -> a drops by 32 * 0.7597469266
    assert elo_update(1200, 1000, 0.0) == pytest.approx((1175.6880983, 1024.3119017), abs=1e-6)
    # 1400 vs 1000: E_a = 1 / 1.1; a draw moves a by 32 (0.5 - 10/11) = -144/11
    assert elo_update(1400, 1000, 0.5, k=32) == pytest.approx((1400 - 144 / 11, 1000 + 144 / 11))
    assert elo_update(1000, 1000, 1.0, k=16) == pytest.approx((1008.0, 992.0))


def test_openskill_ratings_match_the_library():
    games = [("a", "b", 1.0), ("b", "c", 0.5), ("c", "a", 1.0), ("a", "b", 0.0), ("a", "c", 0.5)]
    ratings = Ratings()
    for a, b, s in games:
        ratings.record(a, b, s)
    model = PlackettLuce()
    ref = {m: model.rating(name=m) for m in "abc"}
    for a, b, s in games:
        ranks = {1.0: [1, 2], 0.5: [1, 1], 0.0: [2, 1]}[s]
        [[ref[a]], [ref[b]]] = model.rate([[ref[a]], [ref[b]]], ranks=ranks)
    rows = {r["id"]: r for r in ratings.table()}
    for m in "abc":
        assert rows[m]["mu"] == pytest.approx(ref[m].mu, rel=1e-12)
        assert rows[m]["sigma"] == pytest.approx(ref[m].sigma, rel=1e-12)
        assert rows[m]["ordinal"] == pytest.approx(ref[m].ordinal(), rel=1e-12)
    assert [r["ordinal"] for r in ratings.table()] == sorted((r["ordinal"] for r in rows.values()), reverse=True)
    assert rows["a"]["games"] == 4 and rows["b"]["games"] == 3


def test_openskill_win_loss_and_tie_directions():
    r = Ratings()
    r.record("w", "l", 1.0)
    r.record("x", "y", 0.5)
    rows = {t["id"]: t for t in r.table()}
    mu0, sigma0 = PlackettLuce().mu, PlackettLuce().sigma
    assert rows["w"]["mu"] > mu0 > rows["l"]["mu"] and rows["w"]["elo"] == 1016 and rows["l"]["elo"] == 984
    assert rows["x"]["mu"] == pytest.approx(rows["y"]["mu"]) and rows["x"]["sigma"] < sigma0
    assert rows["x"]["elo"] == rows["y"]["elo"] == 1000
    with pytest.raises(ValueError):
        r.record("w", "w", 1.0)
    with pytest.raises(ValueError):
        r.record("w", "l", 0.3)


def test_ratings_state_round_trip():
    r = Ratings()
    for a, b, s in [("a", "b", 1.0), ("b", "c", 0.5), ("c", "a", 0.0)]:
        r.record(a, b, s)
    ids, vals = r.state_arrays()
    assert isinstance(vals, np.ndarray) and vals.dtype == np.float64 and vals.shape == (3, 4)
    back = Ratings()
    back.load_state_arrays(list(np.array(ids, dtype="S")), vals)  # ids as bytes, as h5py returns them
    assert back.table() == r.table()
    back.record("a", "c", 1.0)
    r.record("a", "c", 1.0)
    assert back.table() == r.table()


# ------------------------------------------------------------------------------------------------
# Scripted Connect Four players
# ------------------------------------------------------------------------------------------------
def board_with(mine=(), theirs=()):
    """``(6, 7, 2)`` observation planes; row 5 is the bottom."""
    b = np.zeros((6, 7, 2), np.int8)
    for r, c in mine:
        b[r, c, 0] = 1
    for r, c in theirs:
        b[r, c, 1] = 1
    return b


def obs_of(board):
    return {"observation": board, "action_mask": (~board[0].any(axis=-1)).astype(np.int8)}


def test_board_layout_matches_pettingzoo():
    env = connect_four_v3()
    env.reset(seed=0)
    env.step(3)  # player_0
    obs = env.observe("player_1")
    assert obs["observation"][5, 3, 1] == 1 and obs["observation"].sum() == 1  # bottom row, opponent channel
    assert env.observe("player_0")["observation"][5, 3, 0] == 1
    for _ in range(5):
        env.step(3)
    assert env.observe(env.agent_selection)["action_mask"].tolist() == [1, 1, 1, 0, 1, 1, 1]
    assert drop_row(env.observe(env.agent_selection)["observation"], 3) is None
    env.close()


def test_drop_row_and_wins():
    b = board_with(mine=[(5, 2)], theirs=[(5, 3), (4, 3)])
    assert drop_row(b, 0) == 5 and drop_row(b, 2) == 4 and drop_row(b, 3) == 3
    assert drop_row(b[..., 0] + b[..., 1], 3) == 3  # occupancy grid works too
    ch = np.zeros((6, 7), np.int8)
    ch[5, [0, 1, 3]] = 1
    assert wins(ch, 5, 2) and not wins(ch, 5, 4) and not wins(ch, 4, 2)
    ch = np.zeros((6, 7), np.int8)
    ch[[5, 4, 3], 6] = 1
    assert wins(ch, 2, 6) and not wins(ch, 2, 5)
    ch = np.zeros((6, 7), np.int8)
    ch[[5, 4, 3], [1, 2, 3]] = 1
    assert wins(ch, 2, 4) and not wins(ch, 2, 2) and not wins(ch, 5, 1)  # (5, 1) completes only three
    ch[2, 4], ch[4, 2] = 1, 0
    assert wins(ch, 4, 2)  # the missing piece in the middle of the diagonal
    ch = np.zeros((6, 7), np.int8)
    ch[[5, 4, 3], [5, 4, 3]] = 1
    assert wins(ch, 2, 2) and not wins(ch, 2, 4)
    ch = np.zeros((6, 7), np.int8)
    ch[5, [4, 5, 6]] = 1  # no wrap-around to the next row
    assert not wins(ch, 4, 0)


WIN_BOARDS = {
    # name: (board, winning column)
    "horizontal": (board_with(mine=[(5, 0), (5, 1), (5, 2)], theirs=[(4, 0), (4, 1), (4, 6)]), 3),
    "horizontal_gap": (board_with(mine=[(5, 3), (5, 5), (5, 6)], theirs=[(4, 3), (4, 5), (5, 0)]), 4),
    "vertical": (board_with(mine=[(5, 4), (4, 4), (3, 4)], theirs=[(5, 0), (5, 1), (5, 6)]), 4),
    "diagonal_up_right": (board_with(mine=[(5, 1), (4, 2), (3, 3)],
                                     theirs=[(5, 2), (5, 3), (4, 3), (5, 4), (4, 4), (3, 4)]), 4),
    "diagonal_up_left": (board_with(mine=[(5, 5), (4, 4), (3, 3)],
                                    theirs=[(5, 4), (5, 3), (4, 3), (5, 2), (4, 2), (3, 2)]), 2),
}


@pytest.mark.parametrize("name", sorted(WIN_BOARDS))
def test_lookahead_takes_a_win(name):
    board, col = WIN_BOARDS[name]
    for seed in range(20):
        assert lookahead_player(np.random.default_rng(seed))(obs_of(board)) == col


def test_lookahead_blocks_and_prefers_winning():
    block = board_with(mine=[(4, 0), (4, 1)], theirs=[(5, 0), (5, 1), (5, 2)])
    diag_block = board_with(mine=[(5, 2), (5, 3), (4, 3), (5, 4), (4, 4), (3, 4)], theirs=[(5, 1), (4, 2), (3, 3)])
    both = board_with(mine=[(5, 6), (4, 6), (3, 6)], theirs=[(5, 0), (5, 1), (5, 2)])
    for seed in range(20):
        assert lookahead_player(np.random.default_rng(seed))(obs_of(block)) == 3
        assert lookahead_player(np.random.default_rng(seed))(obs_of(diag_block)) == 4
        assert lookahead_player(np.random.default_rng(seed))(obs_of(both)) == 6


def test_players_never_play_a_full_column():
    b = np.zeros((6, 7, 2), np.int8)
    b[:, [0, 2, 6], 0] = 1
    b[::2, [0, 2, 6], :] = [0, 1]  # alternate pieces so the full columns hold no vertical four
    b[5, 3, 1] = 1
    obs = obs_of(b)
    assert obs["action_mask"].tolist() == [0, 1, 0, 1, 1, 1, 0]
    rng = np.random.default_rng(0)
    players = [random_player(rng), lookahead_player(rng)]
    moves = [p(obs) for p in players for _ in range(300)]
    assert set(moves) <= {1, 3, 4, 5}
    counts = np.bincount(moves[:300], minlength=7)[[1, 3, 4, 5]]
    assert np.all(np.abs(counts / 300 - 0.25) <= 5 * math.sqrt(0.25 * 0.75 / 300))  # random is uniform


# ------------------------------------------------------------------------------------------------
# AEC actor loop on connect_four_v3
# ------------------------------------------------------------------------------------------------
def scripted(cols, seen=None):
    it = iter(cols)

    def play(obs):
        if seen is not None:
            seen.append(obs)
        return next(it)

    return play


def test_play_episode_vertical_win_for_player_0():
    seen0, seen1 = [], []
    env = connect_four_v3()
    ret = play_episode(env, {"player_0": scripted([0] * 4, seen0), "player_1": scripted([1] * 4, seen1)}, seed=0)
    assert ret == {"player_0": 1.0, "player_1": -1.0}
    assert len(seen0) == 4 and len(seen1) == 3  # the game ends on player_0's fourth move
    assert seen1[0]["observation"][5, 0, 1] == 1 and seen1[0]["action_mask"].tolist() == [1] * 7
    assert seen0[3]["observation"][:, 0, 0].tolist() == [0, 0, 0, 1, 1, 1]
    # the same env object is reusable: player_1 wins when player_0 wastes its fourth move
    ret = play_episode(env, {"player_0": scripted([0, 0, 0, 6]), "player_1": scripted([1] * 4)}, seed=1)
    assert ret == {"player_0": -1.0, "player_1": 1.0}
    env.close()


def test_play_matches_lookahead_beats_random_and_alternates_seats():
    firsts = {"a": 0, "b": 0}

    def counting(name, player):
        def play(obs):
            firsts[name] += int(obs["observation"].sum() == 0)  # only the first seat sees an empty board
            return player(obs)
        return play

    n = 40
    res = play_matches(connect_four_v3, counting("a", lookahead_player(np.random.default_rng(0))),
                       counting("b", random_player(np.random.default_rng(1))), n, seed=5)
    assert sum(res.values()) == n and res["wins"] >= 0.8 * n, res
    assert firsts == {"a": n // 2, "b": n // 2}
    again = play_matches(connect_four_v3, lookahead_player(np.random.default_rng(0)),
                         random_player(np.random.default_rng(1)), n, seed=5)
    assert again == res
