"""Reading a run directory: :class:`Run`, a read-only view of its ``run.h5`` tables and attributes, checkpoints and
trajectory files."""
from __future__ import annotations

import glob
import os
from typing import Dict, List

import h5py
import numpy as np

from hpcmarl.storage.checkpoints import list_checkpoints
from hpcmarl.storage.files import KIND_RUN, StorageError, check_inside, damaged, open_read
from hpcmarl.storage.writers import read_table


class Run:
    """Read-only view of a run directory (what ``inspect`` and ``tools/`` use)."""

    def __init__(self, run_dir: str):
        if not os.path.isdir(run_dir):
            raise StorageError(f"{run_dir}: no such run directory")
        self.dir = run_dir
        self.run_path = os.path.join(run_dir, "run.h5")
        if not os.path.exists(self.run_path):
            raise StorageError(f"{run_dir}: no run.h5 (not an hpcmarl run directory, or the run never started)")

    def open(self) -> h5py.File:
        """run.h5, read-only (:func:`open_read`: a file from elsewhere is read within itself and its directory)."""
        return open_read(self.run_path, KIND_RUN, root=self.dir)

    def _table(self, name: str) -> Dict[str, np.ndarray]:
        with self.open() as f:
            try:
                return read_table(f[name]) if isinstance(f.get(name), h5py.Group) else {}
            except StorageError:
                raise
            except (OSError, RuntimeError, KeyError, ValueError) as e:
                raise damaged(self.run_path, e) from None

    def metrics(self) -> Dict[str, np.ndarray]:
        return self._table("metrics")

    def episodes(self) -> Dict[str, np.ndarray]:
        return self._table("episodes")

    def attrs(self) -> dict:
        with self.open() as f:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}

    def checkpoints(self) -> List[str]:
        return list_checkpoints(os.path.join(self.dir, "checkpoints"))

    def trajectory_files(self) -> List[str]:
        """``trajectories/actor-NNNNN.h5``; one that is a link leading out of the run directory is refused."""
        paths = sorted(glob.glob(os.path.join(glob.escape(self.dir), "trajectories", "actor-*.h5")))
        for p in paths:
            check_inside(p, self.dir)
        return paths
