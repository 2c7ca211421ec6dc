"""HDF5 files and their robustness: schema version and kinds, disk-space checks, durable renames, stale temporaries,
opening for append (repairing what a killed SWMR writer left) and opening read-only (checked, SWMR-aware)."""
from __future__ import annotations

import ctypes
import errno
import glob
import os
import re
import shutil
from typing import List, Optional

import h5py
import numpy as np

SCHEMA_VERSION = 1
KIND_RUN, KIND_TRAJ, KIND_CKPT = "hpcmarl.run", "hpcmarl.trajectories", "hpcmarl.checkpoint"


class StorageError(RuntimeError):
    pass


class DiskFull(StorageError):
    """The run directory's file system is (nearly) full. Raised *before* a write, so HDF5 never meets ENOSPC
    half-way through one (it can crash on closing a file whose write failed)."""


def ensure_space(path: str, need_bytes: int = 0, reserve_mb: float = 64.0) -> None:
    """Raise :class:`DiskFull` unless the file system holding ``path`` has ``need_bytes`` free beyond a reserve of
    ``reserve_mb`` MiB (``output.min_free_mb``: room for the other ranks' writes between two checks)."""
    d = path
    while d and not os.path.isdir(d):
        d = os.path.dirname(d)
    u = shutil.disk_usage(d or ".")
    need = int(need_bytes) + int(reserve_mb * 2 ** 20)
    if u.free < need:
        raise DiskFull(f"no space left for {path}: its file system has {u.free / 2 ** 20:.1f} MiB free of "
                       f"{u.total / 2 ** 20:.1f} MiB, {need / 2 ** 20:.1f} MiB needed "
                       f"(output.min_free_mb = {reserve_mb:g} MiB kept free)")


def fsync_path(path: str) -> None:
    """fsync a file or a directory by name (a directory: the names created, renamed or removed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(tmp: str, path: str) -> None:
    """Rename the complete file ``tmp`` to ``path`` so that a crash or a power loss leaves the old state or the whole
    new file: ``tmp`` fsynced before the rename, its directory after it (checkpoints, pool snapshots)."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(os.path.dirname(os.path.abspath(path)))


# what a writer killed half-way leaves in a run directory (temporary names, renamed once complete; the copies
# open_for_append makes of files a killed SWMR writer left)
STALE_TEMPORARIES = ("config.yaml.tmp", os.path.join("checkpoints", "ckpt-*.h5.tmp*"),
                     os.path.join("pool", "*.h5.tmp*"), "run.h5.repair",
                     os.path.join("trajectories", "actor-*.h5.repair"))


def remove_stale_temporaries(run_dir: str) -> List[str]:
    """Remove the temporary files of writes that never finished (a SIGKILL during a checkpoint, a pool snapshot, the
    config's write or a repair); only called at a start, before any rank writes. Returns the paths removed."""
    removed = []
    for pattern in STALE_TEMPORARIES:
        for p in glob.glob(os.path.join(glob.escape(run_dir), pattern)):
            if os.path.isfile(p):
                os.remove(p)
                removed.append(p)
    return removed


def disk_full(exc: BaseException) -> bool:
    """``exc`` (or what caused it) says the disk is full: :class:`DiskFull`, or ENOSPC/EDQUOT from the OS or HDF5."""
    while exc is not None:
        if isinstance(exc, DiskFull) or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "errno = 28" in str(exc) or "No space left on device" in str(exc) or quota_exceeded(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def quota_exceeded(exc: BaseException) -> bool:
    """``exc`` (or what caused it) is EDQUOT, from the OS or inside an HDF5 message: a full quota, not a full disk."""
    while exc is not None:
        text = str(exc)
        if getattr(exc, "errno", None) == errno.EDQUOT or f"errno = {errno.EDQUOT}," in text \
                or "quota exceeded" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# --------------------------------------------------------------------------------------------------
# opening files
# --------------------------------------------------------------------------------------------------
def open_for_append(path: str, **kwargs) -> h5py.File:
    """Open an existing file for appending (``kwargs``: file access options, e.g. ``rdcc_nbytes``); a file left open
    by a killed SWMR writer (its consistency flags still set) is rewritten from a read-only SWMR view first."""
    try:
        return h5py.File(path, "a", libver="latest", **kwargs)
    except OSError as e:
        if "consistency flags" not in str(e) and "already open for write" not in str(e):
            raise
    tmp = path + ".repair"
    with h5py.File(path, "r", swmr=True) as src, h5py.File(tmp, "w", libver="latest") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name in src:
            src.copy(src[name], dst, name=name)
    os.replace(tmp, path)
    return h5py.File(path, "a", libver="latest", **kwargs)


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_file(path: str) -> None:
    """Cheap pre-flight check of an HDF5 file before it is opened: it exists, carries the HDF5
    signature and is not shorter than the end-of-file address its superblock records.

    A truncated file has to be caught here: opening one in SWMR-read mode (what ``open_read`` does)
    makes the HDF5 library retry its metadata reads for a very long time instead of failing. Files
    that a SWMR writer holds open right now (superblock v3 with the write and SWMR-write flags set) are
    not checked, as the HDF5 library itself does not check them either.
    """
    if not os.path.exists(path):
        raise StorageError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise StorageError(f"{path}: not a regular file")
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        off = 0
        while off + 8 <= size:  # the superblock sits at 0, 512, 1024, 2048, ... (after a user block)
            fh.seek(off)
            if fh.read(8) == _SIGNATURE:
                break
            off = 512 if off == 0 else off * 2
        else:
            raise StorageError(f"{path}: not an HDF5 file")
        head = fh.read(56)  # bytes 8.. of the superblock
    truncated = StorageError(f"{path}: truncated or damaged HDF5 file ({size} bytes, superblock unreadable)")
    if len(head) < 4:
        raise truncated
    version = head[0]
    if version in (0, 1):
        o = head[13 - 8]
        base_at = (24 if version == 0 else 28) - 8
        flags, swmr_live = 0, False
    elif version in (2, 3):
        o = head[9 - 8]
        base_at = 12 - 8
        flags = head[11 - 8]
        swmr_live = version >= 3 and (flags & 0x1) and (flags & 0x4)
    else:
        raise StorageError(f"{path}: unknown HDF5 superblock version {version}")
    if o not in (2, 4, 8, 16) or len(head) < base_at + 3 * o:
        raise truncated
    base = int.from_bytes(head[base_at:base_at + o], "little")
    eof = int.from_bytes(head[base_at + 2 * o:base_at + 3 * o], "little")
    if swmr_live or eof == (1 << (8 * o)) - 1:
        return
    if size < base + eof:
        raise StorageError(f"{path}: truncated HDF5 file ({size} bytes, its superblock says {base + eof})")


# --------------------------------------------------------------------------------------------------
# opening files read-only
# --------------------------------------------------------------------------------------------------
# A SWMR reader retries a metadata read whose checksum fails (the writer may be half-way through a
# flush) with exponential back-off, 100 times by default: on a damaged or truncated file that is hours.
# 30 attempts keep the retries for a live file (they succeed within a few) but give up within ~1 s.
_SWMR_READ_ATTEMPTS = 30
_set_attempts = None


def _attempts_setter():
    """``H5Pset_metadata_read_attempts`` from the libhdf5 that h5py uses (h5py does not wrap it)."""
    global _set_attempts
    if _set_attempts is None:
        _set_attempts = False
        try:
            with open("/proc/self/maps") as fh:
                libs = sorted({ln.split()[-1] for ln in fh if re.search(r"/libhdf5[-_.]", ln) and "_hl" not in ln})
            if len(libs) == 1:
                fn = ctypes.CDLL(libs[0]).H5Pset_metadata_read_attempts
                fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
                _set_attempts = fn
        except (OSError, AttributeError):
            pass
    return _set_attempts or None


def _open_swmr(path: str) -> h5py.File:
    """Read-only SWMR open with a bounded number of metadata read attempts (where it can be set)."""
    setter = _attempts_setter()
    if setter is not None:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)  # what h5py.File uses as well
        if setter(fapl.id, _SWMR_READ_ATTEMPTS) >= 0:
            fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
            return h5py.File(fid)
    return h5py.File(path, "r", swmr=True)


def first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def open_read(path: str, expect_kind: Optional[str] = None, swmr: bool = False, root: Optional[str] = None,
              virtual: bool = False) -> h5py.File:
    """Open an hpcmarl HDF5 file read-only, whether a writer still has it open or not: the one way every reader opens
    a file hpcmarl did not just write (it may come from elsewhere).

    A closed file is opened normally first (HDF5 then checks it against truncation); a file that a SWMR
    writer has open (or that a killed one left flagged) is opened in SWMR-read mode. ``swmr=True``
    returns a SWMR-mode handle in any case (needed to read virtual datasets whose sources are live).
    Every problem is one :class:`StorageError` line that names the path: no such file, not a regular file, a link
    leading out of ``root`` (the run directory it was found in), not HDF5, truncated/damaged (checked first:
    :func:`check_file`), being created (not yet in SWMR mode), wrong kind, wrong schema version, and content that
    reads other files or claims more data than it holds (:func:`check_contents`; ``virtual=True``: virtual datasets
    allowed, for an index whose sources its reader checks).
    """
    if os.path.isdir(path):
        raise StorageError(f"{path}: is a directory, not an HDF5 file")
    if root is not None:
        check_inside(path, root)
    check_file(path)  # no such file, not HDF5, truncated: before HDF5 gets to retry SWMR reads of a damaged file
    live = False
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        msg = first_line(e)
        if "already open for write" in msg or "consistency flags" in msg:
            live = True
        elif "lock" in msg:
            raise StorageError(f"{path}: being written and not readable yet (its writer has not switched to "
                               f"SWMR mode): {msg}") from None
        else:
            raise StorageError(f"{path}: cannot be read (truncated or damaged?): {msg}") from None
    if live or swmr:
        if not live:
            f.close()
        try:
            f = _open_swmr(path)
        except OSError as e:
            raise StorageError(f"{path}: cannot be read (truncated or damaged?): {first_line(e)}") from None
    try:
        kind = f.attrs.get("kind")
        ver = f.attrs.get("schema_version")
    except (OSError, RuntimeError, KeyError) as e:
        f.close()
        raise StorageError(f"{path}: cannot be read (truncated or damaged?): {first_line(e)}") from None
    if isinstance(kind, bytes):
        kind = kind.decode()
    if expect_kind is not None and kind != expect_kind:
        f.close()
        raise StorageError(f"{path}: not an hpcmarl {expect_kind.split('.')[-1]} file (kind={kind!r})")
    if ver is not None:
        try:
            ver = int(ver)
        except (TypeError, ValueError):
            ver = -1
        if ver != SCHEMA_VERSION:
            f.close()
            raise StorageError(f"{path}: schema version {ver}, this hpcmarl reads version {SCHEMA_VERSION}")
    try:
        check_contents(f, path, virtual)
    except BaseException as e:
        f.close()
        if isinstance(e, StorageError):
            raise
        if isinstance(e, (OSError, RuntimeError, KeyError, ValueError, RecursionError)):
            raise damaged(path, e) from None
        raise
    return f


def damaged(path: str, e: BaseException) -> StorageError:
    return StorageError(f"{path}: cannot be read (truncated or damaged?): {first_line(e)}")


def inside(path: str, root: str) -> bool:
    """``path`` (links resolved) is ``root`` or lies under it (links resolved)."""
    r, p = os.path.realpath(root), os.path.realpath(path)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def check_inside(path: str, root: str) -> None:
    """Raise :class:`StorageError` (one line) when ``path``, found in the run directory ``root``, leads out of it."""
    if not inside(path, root):
        raise StorageError(f"{path}: leads to {os.path.realpath(path)}, outside the run directory {root}; refused "
                           f"(files of a run are read inside its directory only)")


# --------------------------------------------------------------------------------------------------
# what a file from elsewhere may hold, and how much of it is read
# --------------------------------------------------------------------------------------------------
FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}  # the HDF5 filters h5py writes without plug-ins
_DTYPE_KINDS = "biufcS"  # plain numbers, booleans, fixed-length byte strings: what hpcmarl writes
_UNSTORED_SLACK = 64 * 2 ** 20  # a dataset may claim this much beyond ...
_MAX_RATIO = 1100  # ... this many times the bytes it stores (gzip's ceiling is about 1030)
READ_LIMIT_VAR, READ_LIMIT_MB = "HPCMARL_READ_LIMIT_MB", 512


def check_contents(f: h5py.File, path: str, virtual: bool = False) -> None:
    """Refuse (:class:`StorageError`, one line) what hpcmarl never writes and what would make a reader read another
    file, block or allocate without bound: external and user-defined links, datasets with external raw storage
    (which may name any file, a FIFO or ``/dev/zero``), virtual datasets (unless ``virtual``), HDF5 filters other
    than :data:`FILTERS` (a filter plug-in would be loaded), data types other than numbers and fixed-length strings,
    and datasets whose extent claims far more than they store (a chunked dataset of 8 GiB with no chunk written
    reads as 8 GiB of fill values). Only metadata is read; nothing is followed."""
    def link(name, lk):
        if isinstance(lk, h5py.ExternalLink):
            return f"/{_shown(name)} keeps its data in another file (an external link to {_shown(lk.filename)})"
        if not isinstance(lk, (h5py.HardLink, h5py.SoftLink)):
            return f"/{_shown(name)} is a user-defined link"
        return None

    def dataset(name, obj):
        if not isinstance(obj, h5py.Dataset):
            return None
        if obj.is_virtual:
            if virtual:
                return None
            files = sorted({_shown(v.file_name) for v in obj.virtual_sources()})
            return f"/{_shown(name)} keeps its data in another file (a virtual dataset of {', '.join(files)})"
        if obj.external:
            return f"/{_shown(name)} keeps its data in another file (external storage in {_shown(obj.external[0][0])})"
        plist = obj.id.get_create_plist()
        for i in range(plist.get_nfilters()):
            code = plist.get_filter(i)[0]
            if code not in FILTERS:
                return f"/{_shown(name)} uses HDF5 filter {code}, which hpcmarl does not write"
        if obj.dtype.kind not in _DTYPE_KINDS:
            return f"/{_shown(name)} holds {obj.dtype} values, which hpcmarl does not write"
        claimed, stored = nbytes(obj), obj.id.get_storage_size()
        if claimed > _UNSTORED_SLACK and claimed > _MAX_RATIO * stored:
            return (f"/{_shown(name)} claims {claimed / 2 ** 20:,.0f} MiB ({obj.shape} {obj.dtype}) but stores "
                    f"{stored / 2 ** 20:,.1f} MiB")
        return None

    bad = f.visititems_links(link) or f.visititems(dataset)
    if bad:
        raise StorageError(f"{path}: {bad}; refused (hpcmarl never writes this; a file from elsewhere is read "
                           f"within itself)")


def _shown(text, limit: int = 160) -> str:
    """A name taken from a file, as one bounded line (newlines and control characters escaped)."""
    text = os.fsdecode(text) if isinstance(text, bytes) else str(text)
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def nbytes(d: h5py.Dataset, rows: Optional[int] = None) -> int:
    """Bytes of ``d`` (of its first ``rows`` rows) once read into memory."""
    shape = d.shape or ()
    first = (shape[0] if rows is None else rows) if shape else 1
    return int(np.prod(shape[1:], dtype=np.float64) * first) * d.dtype.itemsize


def read_limit() -> int:
    """How many bytes one read of a file from elsewhere may bring into memory: ``HPCMARL_READ_LIMIT_MB`` MiB
    (default 512)."""
    text = os.environ.get(READ_LIMIT_VAR, "").strip()
    if not text:
        return READ_LIMIT_MB * 2 ** 20
    try:
        mb = float(text)
    except ValueError:
        mb = -1.0
    if not mb > 0 or mb != mb or mb == float("inf"):
        raise StorageError(f"{READ_LIMIT_VAR}={text[:40]!r}: not a positive number of MiB")
    return int(mb * 2 ** 20)


def check_read(path: str, what: str, datasets, rows: Optional[int] = None, limit: Optional[int] = None) -> None:
    """Raise :class:`StorageError` (one line) when reading ``datasets`` (their first ``rows`` rows; all by default),
    named ``what``, of ``path`` would bring more than ``limit`` bytes into memory (default :func:`read_limit`)."""
    size = sum(nbytes(d, rows) for d in datasets)
    limit = read_limit() if limit is None else limit
    if size > limit:
        raise StorageError(f"{path}: reading {what} needs {size / 2 ** 20:,.0f} MiB, over the "
                           f"{limit / 2 ** 20:,.0f} MiB a reader allows ({READ_LIMIT_VAR}); refused")

