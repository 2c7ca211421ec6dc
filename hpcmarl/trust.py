"""What hpcmarl may import: only code the person named. Strings read from files never reach ``importlib`` on their own.

A checkpoint's stored config (``env.name``, ``plugins``), a pool snapshot's ``env`` attribute, ``run.h5`` attributes
and the gymnasium ``task`` of LBF/RWARE are data: a file could name any module (``subprocess:getoutput``), and
importing or calling it would run code. So every import of user code asks this module first (the choke point:
:func:`require`, called by :func:`import_user_module`, by
:func:`hpcmarl.envs.registry.make_env` before an unregistered env's module is imported, and by the LBF/RWARE adapters
before ``gym.make`` sees a ``module:EnvId`` id). An import is allowed when the person named it:

- in the config file (and ``key=value`` overrides) they pass to ``hpcmarl train``/``validate`` or to a tool:
  :func:`hpcmarl.config.load_config` allows its ``env.name`` when it is ``module:callable``, its ``plugins`` and a
  module-qualified gymnasium ``task`` in ``env.kwargs`` or ``actors.variants[*].env_kwargs``;
- on the command line: ``--env-import MODULE:CALLABLE`` (repeatable) of the commands that build an env a file names
  (``evaluate``, ``exploitability``, ``match``) and ``--plugins MODULE`` (repeatable) of ``evaluate``, the one command
  that builds an algorithm from a file (a checkpoint's stored config); the other analysis commands build neither;
- in Python: :func:`allow` or :func:`allowing`.

Registered environments (:data:`hpcmarl.envs.REGISTRY`), batched simulators' environments (``jaxmarl:<env>``,
``vmas:<scenario>``: hpcmarl's own adapters) and built-in algorithms need nothing. Anything else raises
:class:`NotAllowed` (a ``ValueError``: the CLI prints its one line and exits 2) before any module is imported.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from typing import Iterable, Iterator, List, Optional, Set

_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

_ALLOWED: Set[str] = set()  # "module" (may be imported) or "module:callable" (may be imported and called)
_READING: List[str] = []  # the files being read, innermost last (named in the refusal)


class NotAllowed(ValueError):
    """An import of code the person did not name; the one-line message says how to name it."""


def allow(*paths: str) -> None:
    """Allow importing these modules (``"module"``) or modules and callables (``"module:callable"``) in this
    process from now on."""
    for p in paths:
        if not isinstance(p, str) or not p:
            raise ValueError(f"cannot allow {p!r}: expected 'module' or 'module:callable'")
        _ALLOWED.add(p)


@contextlib.contextmanager
def allowing(paths: Iterable[str]) -> Iterator[None]:
    """Allow ``paths`` (as :func:`allow`) inside the ``with`` block only; on leaving it the allow-list is what it was
    before (anything allowed inside is dropped too)."""
    before = set(_ALLOWED)
    try:
        allow(*paths)
        yield
    finally:
        _ALLOWED.clear()
        _ALLOWED.update(before)


@contextlib.contextmanager
def reading(path: str) -> Iterator[None]:
    """Name ``path`` as the file whose contents are being used, so a refusal inside says which file asked."""
    _READING.append(str(path))
    try:
        yield
    finally:
        _READING.pop()


def allowed(path: str, kind: str = "env") -> bool:
    """``kind`` ``"env"`` (an env factory or gymnasium id, ``module:name``): that exact path was named; ``"plugin"``
    (a module to import): the module was named, alone or with one of its callables."""
    if kind != "plugin":
        return path in _ALLOWED
    return path in _ALLOWED or any(a.partition(":")[0] == path for a in _ALLOWED if ":" in a)


def _source() -> Optional[str]:
    return _READING[-1] if _READING else None


def require(path: str, kind: str = "env", detail: str = "") -> None:
    """Raise :class:`NotAllowed` unless ``path`` was named by the person (see :func:`allowed`). ``kind``: ``"env"``
    (an env factory), ``"plugin"`` (an algorithm plug-in module), ``"gym"`` (a module-qualified gymnasium id;
    ``detail`` names the env whose ``task`` it is)."""
    if allowed(path, "plugin" if kind == "plugin" else "env"):
        return
    src = _source()
    flag = "--plugins" if kind == "plugin" else "--env-import"
    if kind == "plugin":
        what = f"plug-in module {path!r} (config key 'plugins')"
    elif kind == "gym":
        what = (f"gymnasium id {path!r}{f' (env.kwargs.task of {detail})' if detail else ''}, which imports module "
                f"{path.partition(':')[0]!r}")
    else:
        what = f"env {path!r}, which is not a registered environment"
    hint = f"code is imported only when you name it: pass {flag} {path}"
    if src is None:  # a Python caller (no file being read): say how to name it there too
        raise NotAllowed(f"{what[0].upper() + what[1:]}, was not named for import; {hint} (or list it in your config "
                         f"file; Python: hpcmarl.trust.allow({path!r}))")
    raise NotAllowed(f"{src} names {what}; {hint}")


def allow_cli(env_imports: Iterable[str] = (), plugins: Iterable[str] = ()) -> None:
    """Allow what ``--env-import MODULE:CALLABLE`` and ``--plugins MODULE`` name (checked: ValueError)."""
    for p in env_imports:
        mod, sep, attr = p.partition(":")
        if not sep or not _MODULE_RE.fullmatch(mod) or not attr:
            raise ValueError(f"--env-import {p!r}: expected MODULE:CALLABLE (a gymnasium id: MODULE:ENV-ID)")
        allow(p)
    for m in plugins:
        if not _MODULE_RE.fullmatch(m):
            raise ValueError(f"--plugins {m!r}: expected a dotted module name")
        allow(m)


def config_imports(data: dict) -> List[str]:
    """What a config mapping (the person's own file and overrides) names for import: ``env.name`` when it is
    ``module:callable``, every ``plugins`` entry, a module-qualified ``task`` in ``env.kwargs`` or in an actor
    variant's ``env_kwargs``. Malformed values are left for the config's own checks."""
    out: List[str] = []
    if not isinstance(data, dict):
        return out
    plugins = data.get("plugins")
    if isinstance(plugins, list):
        out += [m for m in plugins if isinstance(m, str) and m]
    env = data.get("env")
    kwargs_list = []
    if isinstance(env, dict):
        name = env.get("name")
        if isinstance(name, str) and ":" in name:
            out.append(name)
        kwargs_list.append(env.get("kwargs"))
    actors = data.get("actors")
    if isinstance(actors, dict) and isinstance(actors.get("variants"), list):
        kwargs_list += [v.get("env_kwargs") for v in actors["variants"] if isinstance(v, dict)]
    for kw in kwargs_list:
        if isinstance(kw, dict) and isinstance(kw.get("task"), str) and ":" in kw["task"]:
            out.append(kw["task"])
    return out


def import_user_module(name: str):
    """Import a user's module (an env factory, an algorithm plug-in) by dotted name; the working directory is on the
    path, as ``python -m`` would have it, so a module beside the run is found under ``mpirun`` too. Only a module the
    person named (:mod:`hpcmarl.trust`: their config file, ``--plugins``/``--env-import``) is imported; any other
    raises :class:`NotAllowed` before anything is imported."""
    require(name, "plugin")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    return importlib.import_module(name)
