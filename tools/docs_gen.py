"""Generate the reference pages from the code, and check that the committed ones are up to date.

* ``docs/reference/config.md``: every key of the run config, from the config dataclasses (:mod:`hpcmarl.config`, the
  league section :mod:`hpcmarl.league.config`, and the ``algo.*`` dataclass of every built-in algorithm of
  :data:`hpcmarl.algos.base.ALGORITHMS`): type, default, allowed values, meaning (the comment beside the field);
* ``docs/reference/cli.md``: every ``hpcmarl`` command and option, from :func:`hpcmarl.cli.build_parser`;
* ``docs/reference/schema.md``: the HDF5 files a run writes, from the tables in ``tools/docs_schema.py`` (which
  tests/unit/test_docs.py compares with the files the real writers write).

    python tools/docs_gen.py            # write the three pages
    python tools/docs_gen.py --check    # exit 1 naming each page that differs from what would be written

A field without a comment (tools/docs_config.py says which comment belongs to a field), a command or option without
help, fails both: the problems are listed and nothing is written.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [p for p in (ROOT, os.path.join(ROOT, "tools")) if p not in sys.path]

from docs_md import GENERATED, code, md, table  # noqa: E402 - after the path set-up

PAGES = {"config": "docs/reference/config.md", "cli": "docs/reference/cli.md", "schema": "docs/reference/schema.md"}


# --------------------------------------------------------------------------------------------------
# the command line reference
# --------------------------------------------------------------------------------------------------
def _subcommands(parser: argparse.ArgumentParser):
    """``[(name, help, subparser)]`` in the order they were added."""
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in a._choices_actions}
            return [(name, helps.get(name), p) for name, p in a.choices.items()]
    return []


def _arguments(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _metavar(a: argparse.Action) -> str:
    if a.choices is not None and a.metavar is None:
        return "{" + ",".join(map(str, a.choices)) + "}"
    return a.metavar or (a.dest if not a.option_strings else a.dest.upper())


def _usage_part(a: argparse.Action) -> str:
    if not a.option_strings:
        m = _metavar(a)
        return {"*": f"[{m} ...]", "+": f"{m} [{m} ...]", "?": f"[{m}]"}.get(a.nargs, m)
    flag = max(a.option_strings, key=len)
    s = flag if a.nargs == 0 else f"{flag} {_metavar(a)}"
    return s if a.required else f"[{s}]"


def usage(prog: str, parser: argparse.ArgumentParser) -> str:
    args = _arguments(parser)
    return " ".join([prog] + [_usage_part(a) for a in args if a.option_strings]
                    + [_usage_part(a) for a in args if not a.option_strings])


def cli_problems(parser: argparse.ArgumentParser) -> List[str]:
    """Every command and argument without a help text."""
    out = []
    for name, help_, sub in _subcommands(parser):
        if not (help_ or "").strip():
            out.append(f"command '{name}' has no help")
        for a in _arguments(sub):
            if not (a.help or "").strip() or a.help == argparse.SUPPRESS:
                out.append(f"command '{name}': argument '{'/'.join(a.option_strings) or a.dest}' has no help")
    for a in _arguments(parser):
        if not (a.help or "").strip():
            out.append(f"argument '{'/'.join(a.option_strings) or a.dest}' has no help")
    return out


def _default(a: argparse.Action) -> str:
    if not a.option_strings:
        return "required" if a.nargs in (None, "+") else "optional"
    if a.required:
        return "required"
    if isinstance(a, argparse._AppendAction):
        return "repeatable"
    return "none" if a.default is None else code("false" if a.default is False else a.default)


def _type(a: argparse.Action) -> str:
    if a.nargs == 0:
        return "flag"
    return getattr(a.type, "__name__", "str") if a.type is not None else "str"


def _sentence(text: str) -> str:
    text = (text or "").strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else ""


def cli_page(parser: Optional[argparse.ArgumentParser] = None) -> str:
    """The page; ``parser`` (default :func:`hpcmarl.cli.build_parser`)."""
    from hpcmarl import cli

    parser = parser or cli.build_parser()
    prog = parser.prog
    doc = inspect.cleandoc(cli.__doc__ or "").split("\n\n")
    cmds = _subcommands(parser)
    out = ["# Command line reference", "", GENERATED.format(src="hpcmarl/cli.py (build_parser)"), "",
           f"`{prog} COMMAND ...`: {md(parser.description or '')}", ""]
    out += [md(p) + "\n" for p in doc[1:]]
    out += table(["Command", "What it does"], [[f"[`{n}`](#{n})", md(_sentence(h))] for n, h, _ in cmds]) + [""]
    out += ["`hpcmarl COMMAND --help` prints the same help texts. *flag*: an option without a value, off unless given; "
            "*repeatable*: an option that may be given several times, each adding one value.", ""]
    for name, help_, sub in cmds:
        out += [f"## {name} {{#{name}}}", "", md(_sentence(help_)), "", "```text", usage(f"{prog} {name}", sub), "```",
                ""]
        rows = []
        for a in _arguments(sub):
            names = ", ".join(code(s if a.nargs == 0 else f"{s} {_metavar(a)}") for s in a.option_strings)
            text = md(a.help or "")
            if a.choices is not None:
                text += " (one of " + ", ".join(code(c) for c in a.choices) + ")"
            rows.append([names or code(_metavar(a)), _type(a), _default(a), text])
        out += table(["Argument", "Type", "Default", "Meaning"], rows) + [""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------
def generate() -> Tuple[Dict[str, str], List[str]]:
    """``({page key: text}, problems)``."""
    import docs_config
    import docs_schema

    from hpcmarl import cli

    problems: List[str] = []
    pages = {"config": docs_config.config_page(problems), "cli": cli_page()}
    problems += cli_problems(cli.build_parser())
    pages["schema"] = docs_schema.schema_page()
    problems += docs_schema.table_problems()
    return {k: v.rstrip("\n") + "\n" for k, v in pages.items()}, problems


def stale_pages(pages: Dict[str, str]) -> List[str]:
    """The committed pages that differ from ``pages`` (missing ones included)."""
    out = []
    for key, text in pages.items():
        path = os.path.join(ROOT, PAGES[key])
        try:
            with open(path) as f:
                same = f.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            out.append(PAGES[key])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Generate (or --check) docs/reference/{config,cli,schema}.md.")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed page is out of date")
    args = ap.parse_args(argv)
    pages, problems = generate()
    if problems:
        print("docs_gen: undocumented:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    stale = stale_pages(pages)
    if args.check:
        for p in stale:
            print(f"docs_gen: {p} is out of date (run `python tools/docs_gen.py`)", file=sys.stderr)
        return 1 if stale else 0
    for key, text in pages.items():
        path = os.path.join(ROOT, PAGES[key])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if PAGES[key] in stale:
            with open(path, "w") as f:
                f.write(text)
            print(f"wrote {PAGES[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
