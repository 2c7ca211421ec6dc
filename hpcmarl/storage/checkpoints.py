"""Checkpoints (``checkpoints/ckpt-NNNNNNNNN.h5``): written atomically and durably, the last K kept, read back
(damaged ones skipped)."""
from __future__ import annotations

import glob
import os
import re
from typing import Callable, Dict, List, Optional, Tuple

import h5py
import numpy as np

from hpcmarl.storage.files import (
    KIND_CKPT,
    SCHEMA_VERSION,
    StorageError,
    check_read,
    durable_replace,
    ensure_space,
    open_read,
)
from hpcmarl.storage.writers import _attr

_CKPT_RE = re.compile(r"ckpt-(\d+)\.h5$")


def checkpoint_path(ckpt_dir: str, update: int) -> str:
    return os.path.join(ckpt_dir, f"ckpt-{update:09d}.h5")


def checkpoint_update(path: str) -> int:
    """The update a checkpoint's file name carries (``ckpt-NNNNNNNNN.h5``)."""
    return int(_CKPT_RE.search(path).group(1))


def list_checkpoints(ckpt_dir: str) -> List[str]:
    paths = [p for p in glob.glob(os.path.join(ckpt_dir, "ckpt-*.h5")) if _CKPT_RE.search(p)]
    return sorted(paths, key=checkpoint_update)


def save_checkpoint(ckpt_dir: str, update: int, arrays: Dict[str, np.ndarray], attrs: dict, keep: int,
                    reserve_mb: float = 64.0) -> str:
    """Write atomically (temporary name, fsync, rename, directory fsync: :func:`durable_replace`) and keep the newest
    ``keep``. First checks that the uncompressed arrays fit with ``reserve_mb`` MiB to spare (:class:`DiskFull`
    otherwise, nothing written); a failed write removes its temporary file (never picked up: only complete
    ``ckpt-*.h5`` names are), a SIGKILL half-way leaves it to the next start (:func:`remove_stale_temporaries`)."""
    os.makedirs(ckpt_dir, exist_ok=True)
    path = checkpoint_path(ckpt_dir, update)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    ensure_space(path, sum(v.nbytes for v in arrays.values()) + 2 ** 16, reserve_mb)
    tmp = path + f".tmp{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["kind"] = KIND_CKPT
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in attrs.items():
                f.attrs[k] = _attr(v)
            for k, v in arrays.items():
                f.create_dataset(k, data=v, compression="gzip" if v.size > 4096 else None)
            f.attrs["complete"] = 1
        durable_replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        os.remove(old)
    return path


def load_checkpoint(path: str, bounded: bool = True, root: Optional[str] = None,
                    select: Optional[Callable[[str], bool]] = None) -> Tuple[Dict[str, np.ndarray], dict]:
    """Read every dataset and attribute; a truncated, incomplete or crafted file raises :class:`StorageError`
    (:func:`~hpcmarl.storage.files.open_read`), and so does one whose arrays would take more memory than a reader
    allows (:func:`~hpcmarl.storage.files.read_limit`) unless ``bounded=False`` (a run resuming from its own
    checkpoint: its state is as large as its config makes it, a replay buffer included). ``root``: the directory
    the path was found in (a link leading out of it is refused). ``select(name)``: read only the arrays it
    accepts."""
    try:
        with open_read(path, KIND_CKPT, root=root) as f:
            if int(f.attrs.get("complete", 0)) != 1:
                raise StorageError(f"{path}: checkpoint is incomplete")
            found: Dict[str, h5py.Dataset] = {}
            f.visititems(lambda name, obj: found.__setitem__(name, obj) if isinstance(obj, h5py.Dataset)
                         and (select is None or select(name)) else None)
            if bounded:
                check_read(path, f"its {len(found)} arrays", found.values())
            arrays = {k: d[()] for k, d in found.items()}
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except StorageError:
        raise
    except Exception as e:  # h5py raises OSError/KeyError/RuntimeError for damaged files
        raise StorageError(f"{path}: damaged checkpoint: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return arrays, attrs


def checkpoint_attrs(path: str, root: Optional[str] = None) -> dict:
    """The attributes of a checkpoint (update, env steps, config, ...) without reading its arrays."""
    return load_checkpoint(path, root=root, select=lambda name: False)[1]


def latest_checkpoint(ckpt_dir: str, log=print, bounded: bool = True, select: Optional[Callable[[str], bool]] = None
                      ) -> Optional[Tuple[str, Dict[str, np.ndarray], dict]]:
    """Newest readable checkpoint (``bounded``, ``select``: see :func:`load_checkpoint`; a ``select`` that accepts
    nothing reads its attributes only); damaged ones are reported and skipped."""
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            arrays, attrs = load_checkpoint(path, bounded, root=ckpt_dir, select=select)
            return path, arrays, attrs
        except StorageError as e:
            log(f"hpcmarl: warning: skipping {e}")
    return None
