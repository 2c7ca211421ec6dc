"""The reference pages docs/reference/{config,cli,schema}.md are generated from the code (tools/docs_gen.py) and
stay true: they are up to date, every config field and every command and option has a description, and the schema
page names exactly what the writers write (tiny specimen runs, tools/docs_specimens.py). Each check is shown to fail
on a synthetic case."""
import argparse
import dataclasses
import os
import shutil
import sys
from typing import List

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import docs_config  # noqa: E402
import docs_gen  # noqa: E402
import docs_schema  # noqa: E402
import docs_specimens  # noqa: E402


# --------------------------------------------------------------------------------------------------
# the pages are up to date
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated():
    return docs_gen.generate()


def test_the_generated_pages_are_up_to_date(generated):
    pages, problems = generated
    assert not problems, "undocumented:\n" + "\n".join(problems)
    stale = docs_gen.stale_pages(pages)
    assert not stale, f"out of date: {', '.join(stale)} (run `python tools/docs_gen.py` and commit the pages)"


def test_check_names_the_stale_page(generated, tmp_path, monkeypatch, capsys):
    pages, _ = generated
    for key, text in pages.items():
        path = tmp_path / docs_gen.PAGES[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("| `--fresh` |", "| `--stale` |") if key == "cli" else text)
    monkeypatch.setattr(docs_gen, "ROOT", str(tmp_path))
    assert docs_gen.stale_pages(pages) == ["docs/reference/cli.md"]
    assert docs_gen.main(["--check"]) == 1
    assert "docs/reference/cli.md is out of date" in capsys.readouterr().err
    (tmp_path / "docs/reference/schema.md").unlink()
    assert docs_gen.stale_pages(pages) == ["docs/reference/cli.md", "docs/reference/schema.md"]


# --------------------------------------------------------------------------------------------------
# config: every field described
# --------------------------------------------------------------------------------------------------
def test_every_config_field_is_described():
    problems: List[str] = []
    sections = docs_config.config_sections(problems)
    assert not problems, "\n".join(problems)
    rows = [r for s in sections for r in s.rows]
    assert len({r.key for r in rows}) > 100 and all(r.meaning and r.type and r.default for r in rows)
    keys = {r.key.strip("`") for r in rows}
    for key in ("train.total_env_steps", "actors.overlap", "output.root", "algo.encoder",
                "algo.normalize_advantages", "algo.checkpoint_replay", "league.groups.N.strategy",
                "league.exploitability_every", "algo.aggregation"):
        assert key in keys
    allowed = {r.key.strip("`"): r.allowed for s in sections for r in s.rows
               if s.anchor in ("learner", "league-groups")}
    assert allowed["learner.backend"] == "`horovod`, `mpi`"
    assert "`meta_nash`" in allowed["league.groups.N.strategy"]


SYNTHETIC = '''
@dataclass
class Demo:
    """A demo section."""

    mode: str = "a"  # a | b (the second) | c: the third
    size: int = 4  # the size, continued
    # on the next line
    # what the field below says
    bare: int = 0
    # ---- a heading ----
    above: float = 1.0
    level: int = 1  # a level

    # ---- a heading after a blank line ----
    other: bool = False  # other
'''


def test_a_field_without_comment_is_reported():
    ns = {"dataclass": dataclasses.dataclass}
    exec(SYNTHETIC, ns)
    comments = docs_config.field_comments(ns["Demo"], SYNTHETIC)
    assert comments["size"] == "the size, continued on the next line what the field below says"
    assert comments["above"] == "---- a heading ----" and comments["other"] == "other"
    assert "bare" not in comments  # the block above it continues `size`: it has none of its own
    problems: List[str] = []
    rows = docs_config.class_rows(ns["Demo"], "demo.", {}, problems, source=SYNTHETIC)
    assert problems == ["builtins.Demo.bare (demo.bare): no comment describes it"]
    assert {r.key: r.allowed for r in rows}["`demo.mode`"] == "`a`, `b`, `c`"
    assert docs_config.comment_choices("the thing | other", default="x") is None  # prose, not values


# --------------------------------------------------------------------------------------------------
# cli: every command and option described
# --------------------------------------------------------------------------------------------------
def test_every_command_and_option_has_help():
    from hpcmarl import cli

    parser = cli.build_parser()
    assert docs_gen.cli_problems(parser) == []
    page = docs_gen.cli_page(parser)
    for name, _, sub in docs_gen._subcommands(parser):
        assert f"## {name} {{#{name}}}" in page
        for a in docs_gen._arguments(sub):
            assert a.help and (a.option_strings[0] if a.option_strings else a.dest) in page


def test_a_command_or_option_without_help_is_reported():
    p = argparse.ArgumentParser(prog="demo")
    sub = p.add_subparsers(dest="cmd")
    a = sub.add_parser("go", help="go somewhere")
    a.add_argument("where", help="the place")
    a.add_argument("--fast", action="store_true")
    sub.add_parser("stay")
    assert docs_gen.cli_problems(p) == ["command 'go': argument '--fast' has no help", "command 'stay' has no help"]
    assert docs_gen.usage("demo go", a) == "demo go [--fast] where"


# --------------------------------------------------------------------------------------------------
# schema: the page names exactly what the writers write
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def specimens(tmp_path_factory):
    out = tmp_path_factory.mktemp("specimens")
    runs = docs_specimens.make(str(out))
    yield runs
    shutil.rmtree(out, ignore_errors=True)


def test_every_documented_name_is_checked_by_a_specimen():
    assert docs_schema.table_problems() == []
    for key in docs_schema.FILES:
        for kind, name, _, when in docs_schema.entries(key):
            assert set(docs_schema.WHEN[when][1]) <= set(docs_specimens.SPECIMENS), (key, name)


@pytest.mark.parametrize("specimen", list(docs_specimens.SPECIMENS))
def test_the_schema_matches_what_the_writers_write(specimens, specimen):
    if specimen not in specimens:
        pytest.skip(f"specimen {specimen}: {docs_specimens.available()[specimen]}")
    problems = docs_specimens.check_run(specimen, specimens[specimen])
    assert not problems, "\n".join(problems)


def test_the_schema_check_catches_drift(specimens, monkeypatch):
    """An undocumented dataset, a documented one the writers do not write, a wrong type: each is reported."""
    title, anchor, intro, tables = docs_schema.FILES["run"]
    attrs, metrics, *rest = tables
    metrics = metrics[:3] + ([r for r in metrics[3] if r[0] != "metrics/sps"]
                             + [("metrics/never", "float64", "(N,)", "always", "not written")],) + metrics[4:]
    attrs = attrs[:3] + ([("kind", "int64", "always", "wrong type")] + list(attrs[3][1:]),) + attrs[4:]
    monkeypatch.setitem(docs_schema.FILES, "run", (title, anchor, intro, [attrs, metrics] + rest))
    problems = docs_specimens.check_run("ppo", specimens["ppo"])
    assert "ppo: run.h5: dataset metrics/sps is not documented for this run" in problems
    assert "ppo: run.h5: documented dataset metrics/never is not in the files of this run" in problems
    assert "ppo: run.h5: attribute kind is str, documented int64" in problems
    open(os.path.join(specimens["ppo"], "stray.h5"), "w").close()
    try:
        assert "ppo: file stray.h5 is not documented" in docs_specimens.check_run("ppo", specimens["ppo"])
    finally:
        os.remove(os.path.join(specimens["ppo"], "stray.h5"))


# --------------------------------------------------------------------------------------------------
# the README: short, and every link it holds leads somewhere in the repository
# --------------------------------------------------------------------------------------------------
README_MAX_BYTES = 10_240


def local_links(markdown: str) -> List[str]:
    """The targets of ``[text](target)`` links that are not URLs, without their ``#anchor``."""
    import re

    targets = re.findall(r"\]\(([^)\s]+)\)", markdown)
    return [t.split("#")[0] for t in targets if "://" not in t and not t.startswith(("#", "mailto:"))]


def test_the_link_finder_finds_links():
    assert local_links("[a](docs/x.md#y) [b](https://e.org) [c](#top)") == ["docs/x.md"]


def test_the_readme_is_short_and_its_links_resolve():
    with open(os.path.join(ROOT, "README.md"), "rb") as f:
        raw = f.read()
    assert len(raw) <= README_MAX_BYTES, f"README.md is {len(raw)} bytes (at most {README_MAX_BYTES})"
    missing = [t for t in local_links(raw.decode()) if t and not os.path.exists(os.path.join(ROOT, t))]
    assert not missing, f"README.md links to files that do not exist: {missing}"
