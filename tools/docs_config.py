"""The configuration reference (docs/reference/config.md) from the config dataclasses: :mod:`hpcmarl.config`, the league
section :mod:`hpcmarl.league.config`, and the ``algo.*`` dataclass of every built-in algorithm of
:data:`hpcmarl.algos.base.ALGORITHMS`. Every field gets its full key, type, default, allowed values and meaning.

The meaning of a field is its comment: the ``# ...`` on its line(s) and the comment-only lines right below it (its
continuation), or, for a field with none on its line, the comment-only lines right above it that are not the previous
field's continuation (a blank line ends a continuation: a heading comment such as ``# ---- MAST ----`` stands after
one). A field without one is a problem (the page is not written). Allowed values come from a ``Literal`` type (the
loader enforces it: :mod:`hpcmarl.typedconfig`), the comment's ``a | b | c`` form, or the validation code for what a
type cannot say: ``check(x.f in NAMES, "key", ...)`` and the ``"must be ..."`` messages (ranges) of the checks that
name the key, in the module that defines the dataclass.
"""
from __future__ import annotations

import ast
import dataclasses
import fnmatch
import inspect
import io
import re
import sys
import tokenize
import typing
from typing import Any, Dict, List, Optional, Tuple

from docs_md import GENERATED, code, md, table


def _class_source(cls, source: Optional[str] = None) -> Tuple[str, ast.ClassDef]:
    if source is None:
        with open(inspect.getsourcefile(cls)) as f:
            source = f.read()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return source, node
    raise LookupError(f"class {cls.__name__} not found in its source")


def field_comments(cls, source: Optional[str] = None) -> Dict[str, str]:
    """``{field: comment text}`` of a dataclass (see the module docstring for which comment belongs to a field);
    a field without one is absent. ``source``: the text of the file defining ``cls`` (default: read it)."""
    source, node = _class_source(cls, source)
    comment_at: Dict[int, str] = {}
    only_comment = set()
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row = tok.start[0]
            comment_at[row] = tok.string.lstrip("#").strip()
            if not lines[row - 1][:tok.start[1]].strip():
                only_comment.add(row)
    names = {f.name for f in dataclasses.fields(cls)}
    spans = [(n.target.id, n.lineno, n.end_lineno) for n in node.body
             if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.target.id in names]

    def block(rows) -> List[int]:
        out = []
        for r in rows:
            if r not in only_comment:
                break
            out.append(r)
        return out

    trailing = {name: [comment_at[r] for r in range(a, b + 1) if r in comment_at and r not in only_comment]
                for name, a, b in spans}
    below = {name: block(range(b + 1, len(lines) + 1)) for name, _, b in spans}
    above = {name: sorted(block(range(a - 1, 0, -1))) for name, a, _ in spans}
    out, claimed = {}, set()
    for i, (name, _, _) in enumerate(spans):
        text = list(trailing[name])
        if text:
            text += [comment_at[r] for r in below[name]]
            claimed.update(below[name])
        elif above[name] and not claimed & set(above[name]):
            text = [comment_at[r] for r in above[name]]
        if text:
            out[name] = " ".join(t for t in text if t)
    return out


# --------------------------------------------------------------------------------------------------
# config: allowed values from the comment, a Literal, or the validation code
# --------------------------------------------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z_][\w.:-]*")


def comment_choices(text: str, default: Any = None) -> Optional[List[str]]:
    """The values of a comment's ``a | b (what b does) | c: what c does`` form; ``None`` if it has none (a string
    default must be one of them, else the ``|`` is read as prose)."""
    if " | " not in text:
        return None
    vals = []
    for seg in text.split(" | "):
        words = seg.split()
        tok = words[0].rstrip(":,;").strip("\"'`") if words else ""
        if not _WORD.fullmatch(tok):
            return None
        vals.append(tok)
    if isinstance(default, str) and default not in vals:
        return None
    return vals


def _loop_bindings(node: ast.For, bound: Dict[str, str]) -> List[Dict[str, str]]:
    items = node.iter.elts if isinstance(node.iter, (ast.Tuple, ast.List)) else None
    if items is None:
        return [bound]
    out = []
    for item in items:
        b = dict(bound)
        if isinstance(node.target, ast.Name) and isinstance(item, ast.Constant) and isinstance(item.value, str):
            b[node.target.id] = item.value
        elif isinstance(node.target, ast.Tuple) and isinstance(item, ast.Tuple):
            for t, v in zip(node.target.elts, item.elts):
                if isinstance(t, ast.Name) and isinstance(v, ast.Constant) and isinstance(v.value, str):
                    b[t.id] = v.value
        out.append(b)
    return out


def _text(expr, bound: Dict[str, str]) -> Optional[str]:
    """A key or message: a string constant, or an f-string with loop variables filled in and other fields ``{}``."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value
    if isinstance(expr, ast.Name) and expr.id in bound:
        return bound[expr.id]
    if isinstance(expr, ast.JoinedStr):
        parts = []
        for v in expr.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            elif isinstance(v.value, ast.Name) and v.value.id in bound:
                parts.append(bound[v.value.id])
            else:
                parts.append("{}")
        return "".join(parts)
    return None


def _enum(cond, module) -> Optional[List[str]]:
    for n in ast.walk(cond):
        if isinstance(n, ast.Compare) and len(n.ops) == 1 and isinstance(n.ops[0], ast.In):
            c = n.comparators[0]
            if isinstance(c, (ast.Tuple, ast.List, ast.Set)):
                vals = [e.value for e in c.elts if isinstance(e, ast.Constant)]
            elif isinstance(c, ast.Name) and isinstance(getattr(module, c.id, None), (tuple, list, dict)):
                vals = list(getattr(module, c.id))
            else:
                continue
            if vals and all(isinstance(v, str) for v in vals):
                return vals
    return None


def _constraint(msg: Optional[str]) -> Optional[str]:
    if not msg or not msg.startswith("must be "):
        return None
    rest = re.sub(r"\s*=\s*\{\}", "", re.sub(r"\s*\(\{\}\)", "", msg[len("must be "):]))
    return None if "{}" in rest else rest


def validation_rules(module) -> List[Tuple[str, Optional[List[str]], Optional[str]]]:
    """``[(key pattern, accepted values or None, "must be" text or None)]`` of every ``check``/``_check`` call in
    ``module`` (loop variables of ``for k in ("a", "b")`` filled in; other f-string fields match anything)."""
    with open(inspect.getsourcefile(module)) as f:
        tree = ast.parse(f.read())
    out = []

    def visit(node, bound):
        if isinstance(node, ast.For):
            for b in _loop_bindings(node, bound):
                for child in node.body:
                    visit(child, b)
            return
        if isinstance(node, ast.Call) and len(node.args) >= 3:
            fn = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            key = _text(node.args[1], bound) if fn in ("check", "_check") else None
            if key:
                key = key.replace("{}", "*").replace("[", ".").replace("]", "")
                if re.search(r"\.[A-Za-z_]\w*$", key):
                    out.append((key, _enum(node.args[0], module), _constraint(_text(node.args[2], bound))))
        for child in ast.iter_child_nodes(node):
            visit(child, bound)

    visit(tree, {})
    return out


# --------------------------------------------------------------------------------------------------
# config: rows and sections
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    key: str
    type: str
    default: str
    allowed: str
    meaning: str


@dataclasses.dataclass
class Section:
    key: str  # "" = top level
    anchor: str
    title: str
    intro: str
    rows: List[Row]


def type_name(tp, links: Dict[type, str]) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    if origin is typing.Union:
        return " \\| ".join(type_name(a, links) for a in args)
    if origin is typing.Literal:
        return "str"
    if origin in (list, List):
        return f"list[{type_name(args[0], links)}]" if args else "list"
    if origin in (dict, Dict):
        return "mapping" if not args or args[1] is Any else f"mapping[{type_name(args[0], links)}, " \
                                                              f"{type_name(args[1], links)}]"
    if dataclasses.is_dataclass(tp) and tp in links:
        return f"[{links[tp][0]}](#{links[tp][1]})"
    return getattr(tp, "__name__", str(tp))


def value_text(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {value_text(x)}" for k, x in v.items()) + "}"
    return repr(v)


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _matches(pattern: str, key: str) -> bool:
    return fnmatch.fnmatchcase(key.replace(".N.", ".*."), pattern)


def class_rows(cls, prefix: str, links: Dict[type, Tuple[str, str]], problems: List[str],
               source: Optional[str] = None, skip=()) -> List[Row]:
    """One row per field of ``cls`` that is not a section (a nested dataclass) or in ``skip``; a missing comment, or a
    comment whose ``a | b`` values leave out one the validation accepts, is appended to ``problems``."""
    comments = field_comments(cls, source)
    hints = typing.get_type_hints(cls)
    rules = validation_rules(sys.modules[cls.__module__]) if source is None else []  # source: a test's class
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if f.name in skip or (dataclasses.is_dataclass(tp) and tp in links):
            continue
        key = f"{prefix}{f.name}"
        default = default_of(f)
        text = comments.get(f.name, "")
        if not text:
            problems.append(f"{cls.__module__}.{cls.__qualname__}.{f.name} ({key}): no comment describes it")
        choices = [str(a) for a in typing.get_args(tp)] if typing.get_origin(tp) is typing.Literal else None
        said = comment_choices(text, default) if text else None
        choices = choices or said
        mine = [(vals, must) for pat, vals, must in rules if _matches(pat, key)]
        valid = next((vals for vals, _ in mine if vals), None)
        if said and valid and set(valid) - set(said):
            problems.append(f"{key}: its comment lists {' | '.join(said)}, the validation also accepts "
                            f"{', '.join(sorted(set(valid) - set(said)))}")
        if not choices and valid:
            choices = list(valid) + ([default] if isinstance(default, str) and default not in valid else [])
        if choices:
            allowed = ", ".join(code(c) for c in choices)
            if typing.get_origin(tp) in (list, List) or any(typing.get_origin(a) in (list, List)
                                                            for a in typing.get_args(tp)):
                allowed = "each of " + allowed
        else:
            allowed = "; ".join(dict.fromkeys(md(m) for _, m in mine if m))
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) in (list, List) and typing.get_args(tp) else None
        if inner in links and isinstance(default, list):
            shown = f"{len(default)} × the defaults below" if all(d == inner() for d in default) else "see below"
        else:
            shown = code(value_text(default))
        rows.append(Row(code(key), type_name(tp, links), shown, allowed, md(text)))
    return rows


def builtin_algorithms() -> Dict[type, List[str]]:
    """``{config dataclass: [algorithm names]}`` of the built-in algorithms, in registry order."""
    from hpcmarl.algos import base

    out: Dict[type, List[str]] = {}
    for name, algo in base.ALGORITHMS.items():
        if isinstance(algo.config, str) and algo.config.startswith("hpcmarl.algos."):
            out.setdefault(algo.config_class(), []).append(name)
    return out


def doc_of(cls) -> str:
    d = cls.__dict__.get("__doc__") or ""
    return "" if d.startswith(cls.__name__ + "(") else inspect.cleandoc(d)  # dataclass's generated signature: none


def config_sections(problems: List[str]) -> List[Section]:
    """The page's sections in the order of the config's fields: the top level, then each nested dataclass (and the
    entries of a list of them, ``league.groups.N``), the ``algo`` section once per built-in config dataclass."""
    from hpcmarl.config import Config

    links: Dict[type, Tuple[str, str]] = {}
    order: List[Tuple[str, Optional[type]]] = []

    def collect(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            inner = typing.get_args(tp)[0] if typing.get_origin(tp) in (list, List) and typing.get_args(tp) else tp
            if "build" in f.metadata:  # a section whose dataclass its value picks: algo
                order.append((f"{prefix}{f.name}", None))
            elif dataclasses.is_dataclass(inner):
                key = f"{prefix}{f.name}" + (".N" if inner is not tp else "")
                links[inner] = (key, key.replace(".N", "").replace(".", "-"))
                order.append((key, inner))
                collect(inner, key + ".")

    collect(Config, "")
    skip = tuple(k for k, cls in order if cls is None)
    top = class_rows(Config, "", links, problems, skip=skip)
    sections = [Section("", "top-level", "Top level", doc_of(Config), top)]
    for key, cls in order:
        if cls is None:
            sections += algo_sections(key, Config, links, problems)
            continue
        if not doc_of(cls):
            problems.append(f"{cls.__module__}.{cls.__qualname__} ({key}): the section has no docstring")
        sections.append(Section(key, links[cls][1], key, doc_of(cls), class_rows(cls, key + ".", links, problems)))
    return sections


def algo_sections(key: str, Config, links, problems: List[str]) -> List[Section]:
    algos = builtin_algorithms()
    index = [[", ".join(code(n) for n in names), f"[{cls.__name__}](#{key}-{names[0]})"]
             for cls, names in algos.items()]
    out = [Section(key, key, key, f"The keys of the `{key}` section depend on `{key}.name` (default "
                   f"{code(getattr(Config(), key).name)}): each algorithm's dataclass lives beside it in "
                   "`hpcmarl/algos/`. A key of another algorithm is an error that names it.\n\n"
                   + "\n".join(table([f"`{key}.name`", "keys"], index)), [])]
    for cls, names in algos.items():
        if not doc_of(cls):
            problems.append(f"{cls.__module__}.{cls.__qualname__} ({key}): the section has no docstring")
        rows = class_rows(cls, key + ".", links, problems)
        for r in rows:
            if r.key == f"`{key}.name`":
                r.allowed, r.default = ", ".join(code(n) for n in names), code(value_text(names[0]))
        out.append(Section(key, f"{key}-{names[0]}", f"{key}: " + ", ".join(names), doc_of(cls), rows))
    return out


def config_page(problems: List[str]) -> str:
    sections = config_sections(problems)
    out = ["# Configuration reference", "",
           GENERATED.format(src="hpcmarl/config.py, hpcmarl/league/config.py and hpcmarl/algos/"), "",
           "Every key of a run config. A YAML file sets keys by section (`train:` then `total_env_steps: 500000`); "
           "`hpcmarl train CONFIG key=value ...` overrides them by full key (`train.total_env_steps=500000`, "
           "`league.groups.0.strategy=uniform`). Types are checked when the config is loaded and the values and "
           "their combinations are validated before any MPI work starts (`hpcmarl validate CONFIG --np N`); an error "
           "names the key. *Allowed* lists the values the validation accepts (or the field's comment names); a "
           "default of `\"auto\"`, `0` or `null` that the meaning describes is filled in from the environment and the "
           "rest of the config, and the run's saved `config.yaml` lists what was derived.", "",
           "Sections: " + " · ".join(f"[{s.title.split(':')[0] if s.key == 'algo' and s.anchor != 'algo' else s.title}"
                                     f"{'' if s.anchor == 'algo' or s.key != 'algo' else ' (' + s.anchor[5:] + ')'}]"
                                     f"(#{s.anchor})" for s in sections), ""]
    for s in sections:
        level = "###" if s.key == "algo" and s.anchor != "algo" else "##"
        out += [f"{level} {s.title} {{#{s.anchor}}}", ""]
        if s.intro:
            out += [s.intro if s.anchor == "algo" else md(s.intro), ""]
        if s.rows:
            out += table(["Key", "Type", "Default", "Allowed", "Meaning"],
                         [[r.key, r.type, r.default, r.allowed, r.meaning] for r in s.rows]) + [""]
    return "\n".join(out)
