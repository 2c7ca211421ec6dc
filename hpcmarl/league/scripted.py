"""Scripted baselines (no MPI, no torch).

Connect Four (PettingZoo ``connect_four_v3``): ``obs["observation"]`` is ``(6, 7, 2)``: row 0 is the top, row 5
the bottom (pieces fall to the highest free row index); channel 0 holds the player-to-move's pieces, channel 1
the opponent's. ``obs["action_mask"]`` ``(7,)`` marks the non-full columns.

Battle (MAgent2 ``battle_v4``): an agent sees a ``(13, 13, 5)`` view centred on itself (row ``6 + dy``, column
``6 + dx``; channels: walls, own team, own team's hp, other team, other team's hp). Its 21 actions are 13 moves
to the cells within distance 2 (row-major: ``dy`` from -2 to 2, then ``dx``), then 8 attacks on the
neighbouring cells (row-major, the centre left out).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

ROWS, COLS = 6, 7
Player = Callable[[dict], int]


def drop_row(board: np.ndarray, col: int) -> Optional[int]:
    """Row a piece dropped in ``col`` lands in (the lowest empty cell), ``None`` if the column is full.
    ``board``: ``(6, 7, 2)`` observation planes or a ``(6, 7)`` occupancy grid."""
    empty = np.flatnonzero(~np.asarray(board).reshape(ROWS, COLS, -1)[:, col].any(axis=-1))
    return int(empty[-1]) if empty.size else None


def wins(board_channel: np.ndarray, row: int, col: int) -> bool:
    """Whether a piece at ``(row, col)`` (counted as placed) completes four in a row in the ``(6, 7)`` plane
    ``board_channel``: horizontally, vertically or along either diagonal."""
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        run = 1
        for sign in (1, -1):
            r, c = row + sign * dr, col + sign * dc
            while 0 <= r < ROWS and 0 <= c < COLS and board_channel[r, c]:
                run, r, c = run + 1, r + sign * dr, c + sign * dc
        if run >= 4:
            return True
    return False


def random_legal(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    """One uniformly random legal action per row of ``masks`` ``[B, n_actions]``."""
    return np.array([rng.choice(np.flatnonzero(m)) for m in masks], np.int64)


def random_player(rng: np.random.Generator) -> Player:
    """Uniform over the legal columns."""
    return lambda obs: int(random_legal(rng, np.asarray(obs["action_mask"])[None])[0])


def lookahead_player(rng: np.random.Generator) -> Player:
    """One-ply lookahead: a winning move if any, else block the opponent's immediate win, else random legal."""

    def play(obs: dict) -> int:
        board, legal = obs["observation"], np.flatnonzero(obs["action_mask"])
        for ch in (0, 1):  # 0: win now; 1: block the opponent's win
            for c in legal:
                r = drop_row(board, c)
                if r is not None and wins(board[:, :, ch], r, c):
                    return int(c)
        return int(rng.choice(legal))

    return play


VIEW = 13  # battle_v4's view side (view range 6)
_C = VIEW // 2
MOVES = [(dx, dy) for dy in range(-2, 3) for dx in range(-2, 3) if dx * dx + dy * dy <= 4]
ATTACKS = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)]


def charge_actions(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """battle_v4 "charge": attack the nearest visible enemy when it is adjacent, else move to the free cell
    closest to it, else (no enemy in view) a random move. ``obs`` ``[B, 13, 13, 5]`` -> actions ``[B]``."""
    out = np.empty(len(obs), np.int64)
    for b, o in enumerate(obs):
        ys, xs = np.nonzero(o[:, :, 3] > 0)
        if ys.size == 0:
            out[b] = rng.integers(len(MOVES))
            continue
        k = int(np.argmin((xs - _C) ** 2 + (ys - _C) ** 2))
        ex, ey = int(xs[k]) - _C, int(ys[k]) - _C
        if max(abs(ex), abs(ey)) <= 1:
            out[b] = len(MOVES) + ATTACKS.index((ex, ey))
            continue
        blocked = o[:, :, :4].any(axis=-1)  # walls and agents
        best = min((i for i, (dx, dy) in enumerate(MOVES) if (dx, dy) == (0, 0) or not blocked[_C + dy, _C + dx]),
                   key=lambda i: (MOVES[i][0] - ex) ** 2 + (MOVES[i][1] - ey) ** 2)
        out[b] = best
    return out
