"""Scripted Connect Four baselines on PettingZoo ``connect_four_v3`` observations (no MPI, no torch).

``obs["observation"]`` is ``(6, 7, 2)``: row 0 is the top, row 5 the bottom (pieces fall to the highest free
row index); channel 0 holds the player-to-move's pieces, channel 1 the opponent's. ``obs["action_mask"]``
``(7,)`` marks the non-full columns.
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


def random_player(rng: np.random.Generator) -> Player:
    """Uniform over the legal columns."""
    return lambda obs: int(rng.choice(np.flatnonzero(obs["action_mask"])))


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
