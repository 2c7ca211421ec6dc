"""HDF5 outputs: writers and readers live together (``tools/`` and the CLI use the readers).

Files (schema version :data:`SCHEMA_VERSION`; layout documented in docs/reference/schema.md):

* ``run.h5`` — written by the lead learner only: root attributes (config, versions, rank map, SLURM
  variables), ``/metrics/<name>`` one row per logged update, ``/episodes/<column>`` one row per finished
  episode. Opened in SWMR mode once its datasets exist, so it can be read while the run goes on.
* ``trajectories/actor-NNNNN.h5`` — one writer per actor, SWMR; complete episodes only; a resume rolls it back to
  the checkpoint (:class:`TrajectoryWriter`).
* ``checkpoints/ckpt-NNNNNNNNN.h5`` — arrays and text attributes only; written to a temporary name, fsynced,
  renamed, the directory fsynced (:func:`durable_replace`); the last K are kept. run.h5 is flushed and fsynced
  first, so the row counts a checkpoint records are on disk.

Nothing is pickled: every dataset is a plain numeric array, every attribute a number or a string.

The package: :mod:`~hpcmarl.storage.files` (HDF5 file handling and robustness), :mod:`~hpcmarl.storage.writers`
(run.h5 and trajectory writers), :mod:`~hpcmarl.storage.checkpoints`, :mod:`~hpcmarl.storage.reader` (:class:`Run`).
Its names are re-exported here: ``from hpcmarl import storage; storage.save_checkpoint(...)``.
"""
import shutil  # noqa: F401  (storage.shutil, storage.h5py: what the file functions use, patched by tests)

import h5py  # noqa: F401

from hpcmarl.storage.checkpoints import (
    checkpoint_attrs,
    checkpoint_path,
    checkpoint_update,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from hpcmarl.storage.files import (
    KIND_CKPT,
    KIND_RUN,
    KIND_TRAJ,
    SCHEMA_VERSION,
    STALE_TEMPORARIES,
    DiskFull,
    StorageError,
    check_contents,
    check_file,
    check_inside,
    check_read,
    damaged,
    disk_full,
    durable_replace,
    ensure_space,
    first_line,
    fsync_path,
    inside,
    nbytes,
    open_for_append,
    open_read,
    quota_exceeded,
    read_limit,
    remove_stale_temporaries,
)
from hpcmarl.storage.reader import Run
from hpcmarl.storage.writers import RunWriter, Table, TrajectoryWriter, read_table

__all__ = ["SCHEMA_VERSION", "KIND_RUN", "KIND_TRAJ", "KIND_CKPT", "StorageError", "DiskFull", "ensure_space",
           "fsync_path", "durable_replace", "STALE_TEMPORARIES", "remove_stale_temporaries", "disk_full",
           "quota_exceeded", "open_for_append", "check_file", "check_contents", "check_inside", "check_read",
           "read_limit", "nbytes", "inside", "first_line", "open_read", "damaged", "Table", "read_table", "RunWriter",
           "TrajectoryWriter", "checkpoint_path", "checkpoint_update", "list_checkpoints", "save_checkpoint",
           "load_checkpoint", "checkpoint_attrs", "latest_checkpoint", "Run"]
