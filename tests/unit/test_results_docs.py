"""Results kept as data: every benchmark records its RESULT as JSON (tools/_common.py:record), and the results pages
and the README's headline table are rendered from those records (tools/render_results.py), never by hand."""
import ast
import glob
import json
import os
import re
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)

import render_results as rr  # noqa: E402

import _common  # noqa: E402


def render_into(tmp_path, records=(), readme_text=None):
    """Render ``records`` (dicts written as results/<key>.json) into ``tmp_path``; returns ``(main's exit status,
    {page name: text})``."""
    results, docs = tmp_path / "results", tmp_path / "docs"
    results.mkdir(exist_ok=True)
    for rec in records:
        (results / f"{_common.record_key(rec['script'], rec['args'])}.json").write_text(json.dumps(rec))
    readme = tmp_path / "README.md"
    if readme_text is not None:
        readme.write_text(readme_text)
    status = rr.main(["--results", str(results), "--docs", str(docs), "--readme", str(readme)])
    pages = {p.name: p.read_text() for p in docs.glob("*.md")} if docs.exists() else {}
    if readme_text is not None:
        pages["README.md"] = readme.read_text()
    return status, pages


def crafted(commit="0" * 40, args=("--seeds", "0,1"), dirty=False, **over):
    rec = {"schema": 1, "script": "bench_throughput", "args": list(args),
           "command": "python tools/bench_throughput.py " + " ".join(args), "commit": commit, "dirty": dirty,
           "date": "2024-01-02T03:04:05Z",
           "machine": {"cpu": "Test CPU <x> | y", "cores": 2, "usable_cores": 2, "memory_gib": 7.5, "os": "Linux 6",
                       "python": "3.11.0", "torch": "2.0", "env_sps": 7654.3, "env_sps_measure": "simple_spread_v3"},
           "result": {"raw_sps": 7650, "actor_sps": 5120, "ratio": 0.669, "within_20pct": "8/12"},
           "result_line": "RESULT raw_sps=7650 actor_sps=5120 ratio=0.669 within_20pct=8/12",
           "seeds": [0, 1], "per_seed": {"arm": {"return": [-55.123, None]}}, "medians": {"arm": -55.123},
           "extra": {"window": 500, "tables": {"windows": {"columns": ["a", "b"], "rows": [[1, 2.5], [3, None]]}}}}
    rec.update(over)
    return rec


def mkdocs_results_nav():
    with open(os.path.join(ROOT, "mkdocs.yml")) as f:
        nav = yaml.safe_load(f)["nav"]
    section = next(item["Results"] for item in nav if isinstance(item, dict) and "Results" in item)
    return {os.path.basename(path)[:-3]: title for entry in section for title, path in entry.items()}


def test_pages_are_those_of_the_mkdocs_results_section():
    nav = mkdocs_results_nav()
    assert nav.pop("index") == "Overview"
    assert nav == {page: title for page, (title, _) in rr.PAGES.items()}


def result_scripts():
    """tools/*.py that print a ``RESULT`` line (a string constant or f-string starting with it)."""
    out = {}
    for f in sorted(os.listdir(TOOLS)):
        if not f.endswith(".py") or f.startswith("_"):
            continue
        tree = ast.parse(open(os.path.join(TOOLS, f)).read())
        texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        if any(t.startswith("RESULT ") for t in texts):
            out[f[:-3]] = "record" in calls
    return out


def test_every_benchmark_with_a_result_line_records_it_and_has_a_page():
    scripts = result_scripts()
    assert "bench_throughput" in scripts and "soak" in scripts and "scale_model" in scripts
    assert {s for s, recorded in scripts.items() if not recorded} == set()
    assert set(scripts) == set(rr.PAGE_OF)
    for s in scripts:
        assert s in rr.HEADLINE


def test_committed_pages_are_up_to_date():
    assert rr.main(["--check"]) == 0, "run: .venv/bin/python tools/render_results.py"


def test_zero_records_render_every_page_with_its_command(tmp_path):
    status, pages = render_into(tmp_path)
    assert status == 0
    assert set(pages) == {"index.md"} | {f"{p}.md" for p in rr.PAGES}
    assert "**No record yet.**" in pages["index.md"]
    for page, (title, scripts) in rr.PAGES.items():
        text = pages[f"{page}.md"]
        assert text.startswith(f"# {title}\n")
        for s in scripts:
            assert f"## {s}\n" in text and "**What it measures.**" in text
            assert f".venv/bin/python tools/{s}.py" in text
    assert "tools/bench_best_response.py runs/league_leduc" in pages["league.md"]  # its run directory argument
    assert rr.main(["--results", str(tmp_path / "results"), "--docs", str(tmp_path / "docs"), "--readme", "",
                    "--check"]) == 0


def test_a_crafted_record_renders(tmp_path):
    readme = "# x\n\n<!-- results:begin -->\nold table\n<!-- results:end -->\n\ntail\n"
    status, pages = render_into(tmp_path, [crafted()], readme)
    assert status == 0
    key = _common.record_key("bench_throughput", ["--seeds", "0,1"])
    page = pages["throughput.md"]
    assert f"### `python tools/bench_throughput.py --seeds 0,1` {{#{key}}}" in page
    assert "| **commit** | `0000000` |" in page
    assert "| `ratio` | 0.669 |" in page and "| `within_20pct` | 8/12 |" in page
    assert "| arm / return | -55.12 | – |" in page  # per seed, a null shown as –
    assert "| quantity | seed 0 | seed 1 |" in page and "| arm | -55.12 |" in page
    assert "| 3 | – |" in page and "| window | 500 |" in page
    assert "7,654 env steps/s" in page
    assert "Test CPU &lt;x&gt; \\| y" in page  # record text cannot open HTML or break a table
    assert f"(throughput.md#{key})" in pages["index.md"] and "Benchmarks without a record yet" in pages["index.md"]
    r = pages["README.md"]
    assert "old table" not in r and r.startswith("# x\n\n<!-- results:begin -->\n") and r.endswith("\ntail\n")
    assert "(docs/results/throughput.md)" in r and "raw_sps 7650, actor_sps 5120, ratio 0.669" in r
    assert "`0000000`" in r
    # deterministic: rendering again changes nothing
    assert rr.main(["--results", str(tmp_path / "results"), "--docs", str(tmp_path / "docs"), "--readme",
                    str(tmp_path / "README.md"), "--check"]) == 0


def test_every_record_shows_its_commit(tmp_path):
    _, pages = render_into(tmp_path, [crafted(commit="abcdef0123456789")])
    assert "`abcdef0`" in pages["throughput.md"] and "uncommitted" not in pages["throughput.md"]
    _, pages = render_into(tmp_path, [crafted(commit="abcdef0123456789", dirty=True)])
    assert "`abcdef0` with uncommitted changes" in pages["throughput.md"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps(crafted()).replace('"ratio": 0.669', '"ratio": NaN'), "NaN is not JSON"),
    (json.dumps({k: v for k, v in crafted().items() if k != "commit"}), "missing field(s) commit"),
    (json.dumps(crafted(commit="HEAD; rm -rf /")), "'commit' must be a hex commit id"),
    (json.dumps(crafted(script="__import__('os')")), "is not a benchmark of tools/"),
    (json.dumps(crafted(result={"x": {"y": 1}})), "'result' values must be numbers"),
    (json.dumps(crafted(extra={"tables": {"t": {"columns": ["a"], "rows": [[1, 2]]}}})), "'extra.tables.t'"),
    (json.dumps([1, 2]), "top level must be a JSON object"),
])
def test_a_malformed_record_fails_with_a_clear_message(tmp_path, capsys, content, message):
    results = tmp_path / "results"
    results.mkdir()
    (results / (_common.record_key("bench_throughput", ["--seeds", "0,1"]) + ".json")).write_text(content)
    status = rr.main(["--results", str(results), "--docs", str(tmp_path / "docs"), "--readme", ""])
    err = capsys.readouterr().err
    assert status == 2 and "bad record" in err and "bench_throughput--" in err and message in err, err
    assert not (tmp_path / "docs").exists()  # nothing written


def test_a_record_under_another_name_is_refused(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench_throughput--0000000000.json").write_text(json.dumps(crafted()))
    assert rr.main(["--results", str(tmp_path / "results"), "--docs", str(tmp_path / "docs"), "--readme", ""]) == 2
    assert "does not match its script and arguments" in capsys.readouterr().err


def test_each_invocation_writes_a_record_of_its_own_and_none_is_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCMARL_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("HPCMARL_NO_RECORD", raising=False)
    monkeypatch.setattr(_common, "env_speed", lambda *a, **k: 1234.5)  # the 2 s measurement, not under test here
    script = os.path.join(TOOLS, "bench_throughput.py")
    key = _common.record_key("bench_throughput", ["--ranks", "3", "runs/x"])
    assert _common.record_id(script, ["--ranks=3", "runs/x"]) == key  # what a benchmark names its image after
    a = _common.record(script, ["--ranks=3", os.path.join(ROOT, "runs", "x")], "RESULT raw_sps=7650 ratio=0.5 x=nan",
                       seeds=[0, 1], per_seed={("arm", "a"): [1.0, float("inf")]})
    first = open(a).read()
    assert os.path.basename(a) == key + ".json" and _common.record_id(script, ["--ranks", "3", "runs/x"]) == key + "-2"
    b = _common.record(script, ["--ranks", "3", "runs/x"], "RESULT raw_sps=7000 ratio=0.4 x=nan")
    assert os.path.basename(b) == key + "-2.json" and open(a).read() == first  # the first record is untouched
    rec = json.load(open(b))
    assert "history" not in rec and json.load(open(a))["per_seed"] == {"arm/a": [1.0, None]}
    assert rec["result"] == {"raw_sps": 7000, "ratio": 0.4, "x": "nan"} and rec["args"] == ["--ranks", "3", "runs/x"]
    assert rec["command"] == "python tools/bench_throughput.py --ranks 3 runs/x" and rec["machine"]["env_sps"] == 1234.5
    assert len(rec["commit"]) in (7, 40) or rec["commit"] == "unknown"
    assert rr.check_record(os.path.basename(b), rec) is rec
    with pytest.raises(rr.RecordError, match="does not match its script and arguments"):
        rr.check_record(key + "-1.json", rec)  # the first invocation has no number
    c = _common.record(script, [], "RESULT raw_sps=1")
    assert os.path.basename(c) == _common.record_key("bench_throughput", []) + ".json"
    monkeypatch.setenv("HPCMARL_NO_RECORD", "1")
    assert _common.record(script, ["--other"], "RESULT raw_sps=1") == ""
    assert sorted(os.listdir(tmp_path / "results")) == sorted(os.path.basename(p) for p in (a, b, c))  # no temp file
    _, pages = render_into(tmp_path)
    commit = json.load(open(c))["commit"]
    page = pages["throughput.md"]
    assert f"| **commit** | `{commit[:7]}" in page
    assert f"{{#{key}}}" in page and f"{{#{key}-2}}" in page and f"(#{key}-2)" in page  # each links the other
    assert page.index(f"{{#{key}}}") < page.index(f"{{#{key}-2}}")  # oldest first
    assert f"`results/{key}-2.json`" in page


def test_a_file_that_is_not_a_record_is_left_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCMARL_RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("HPCMARL_NO_RECORD", raising=False)
    monkeypatch.setattr(_common, "env_speed", lambda *a, **k: 1.0)
    path = tmp_path / (_common.record_key("bench_throughput", ["--x"]) + ".json")
    path.write_text("{not json")
    new = _common.record(os.path.join(TOOLS, "bench_throughput.py"), ["--x"], "RESULT raw_sps=1")
    assert path.read_text() == "{not json" and new.endswith("-2.json")
    assert json.load(open(new))["result"]["raw_sps"] == 1


def test_a_record_with_uncommitted_changes_is_never_a_headline(tmp_path, monkeypatch):
    readme = "# x\n\n<!-- results:begin -->\n<!-- results:end -->\n"
    clean = crafted(commit="abcdef0123456789", args=("--seeds", "0"), result={"raw_sps": 111})
    newer_dirty = crafted(commit="1234567890abcdef", args=(), dirty=True, result={"raw_sps": 999})
    newer_dirty["date"] = "2025-01-01T00:00:00Z"
    status, pages = render_into(tmp_path, [clean, newer_dirty], readme)
    assert status == 0 and "raw_sps 111" in pages["README.md"] and "999" not in pages["README.md"]
    assert "`1234567` with uncommitted changes" in pages["throughput.md"]  # still shown on its page, marked
    (tmp_path / "only").mkdir()
    (tmp_path / "named").mkdir()
    status, pages = render_into(tmp_path / "only", [newer_dirty], readme)
    assert status == 0 and "bench_throughput" not in pages["README.md"]
    monkeypatch.setitem(rr.HEADLINE_RECORD, "bench_throughput", _common.record_key("bench_throughput", []))
    status, _ = render_into(tmp_path / "named", [clean, newer_dirty], readme)
    assert status == 2  # a headline named on a record with uncommitted changes is refused


def test_pages_name_no_machine_paths(tmp_path):
    rec = crafted(args=("--epymarl-python", "/home/me/venvs/epymarl/bin/python", "--out", "/scratch/me/rw/v2s"))
    rec["command"] = "python tools/bench_throughput.py " + " ".join(rec["args"])
    status, pages = render_into(tmp_path, [rec], "# x\n\n<!-- results:begin -->\n<!-- results:end -->\n")
    assert status == 0
    text = "\n".join(pages.values())
    assert "/home/me" not in text and "/scratch/me" not in text
    assert "<epymarl venv>/bin/python" in pages["throughput.md"] and "<…/rw/v2s>" in pages["throughput.md"]


def test_record_keys_hold_no_machine_paths():
    """A record's arguments name a reference's venv or checkout by a placeholder, a path in the repository relative
    to it: the same benchmark run on another machine or checkout writes the same record."""
    out = os.path.join(_common.ROOT, "runs", "x")
    args = _common.normalize_args(["--jaxmarl-python=/home/ann/venvs/jaxbase/bin/python", "--jaxmarl-baselines",
                                   "/scratch/ann/JaxMARL/baselines/IPPO", "--out", out, "--fresh", "2m"])
    assert args == ["--jaxmarl-python", "<jaxbase venv>/bin/python", "--jaxmarl-baselines", "<…/baselines/IPPO>",
                    "--out", "runs/x", "2m"]
    assert _common.normalize_args(args) == args  # a placeholder is not a path again: <…/baselines/IPPO> stays
    assert _common.portable("--out <…/rw/v2s> /a/b/c") == "--out <…/rw/v2s> <…/b/c>"
    for path in glob.glob(os.path.join(_common.ROOT, "results", "*.json")):
        rec = json.load(open(path))
        if rec["date"] >= "2026-11-29":  # records before kept the paths they were made with (pages hide them)
            assert not [a for a in rec["args"] if os.path.isabs(a)], path


def test_each_results_page_opens_with_its_standing_read_from_the_records(tmp_path, monkeypatch):
    records = {rid: rec for rid, rec in ((os.path.basename(p)[:-5], json.load(open(p)))
                                         for p in glob.glob(os.path.join(ROOT, "results", "*.json")))}
    named = [rid for tables in rr.STANDING.values() for _, rows, *_ in tables for _, rid, _ in rows]
    assert named and not [rid for rid in named if rid not in records]  # every row names a record that exists
    for tables in rr.STANDING.values():
        for _, rows, *_ in tables:
            for label, rid, prefix in rows:  # and a field of it at some budget
                assert any(k.startswith(prefix + "_") for k in records[rid]["result"]), (label, rid, prefix)
    a = crafted(commit="a" * 40, result={"x_100k": 1.5, "x_1m": 2.5, "x_drop": 0.0, "ref_100k": 0.5,
                                         "g_selfplay": 0.8, "g_league": 0.03, "g_nfsp": 0.3})
    b = crafted(commit="b" * 40, args=("--seeds", "7"), result={"x_250k": 9.0})
    b["seeds"], b["machine"]["cpu"] = [7], "Other CPU"
    key_a, key_b = (_common.record_key(r["script"], r["args"]) for r in (a, b))
    monkeypatch.setitem(rr.STANDING, "throughput", [("Caption", [("hpcmarl ours", key_a, "x"), ("theirs", key_a, "ref"),
                                                                 ("later", key_b, "x")]),
                                                    ("Games", [("kuhn", key_a, "g")], ["league", "selfplay"])])
    status, pages = render_into(tmp_path, [a, b])
    page = pages["throughput.md"]
    assert status == 0 and page.index("## Standing") < page.index("## bench_throughput")
    assert "|  | seeds | 100k | 250k | 1m | record, commit |" in page  # budgets in order, drop left out
    assert f"| hpcmarl ours | 0, 1 | 1.5 |  | 2.5 | [{key_a.split('--')[1]}](#{key_a}) `aaaaaaa` |" in page
    assert f"| later | 7 |  | 9.0 |  | [{key_b.split('--')[1]}](#{key_b}) `bbbbbbb` |" in page
    assert "From 2 invocations, 2 commits and 2 CPU types" in page
    assert "| kuhn | 0, 1 | 0.03 | 0.8 | [" in page and "|  | seeds | league | selfplay | record, commit |" in page
    # the budget table drawn below it (the named-column one is not): a line through each row's points, in budget order
    assert "](img/standing-throughput-1.svg)" in page and "standing-throughput-2" not in page
    svg = (tmp_path / "docs" / "img" / "standing-throughput-1.svg").read_text()
    lines = re.findall(r'<polyline points="([^"]+)"[^>]*?( stroke-dasharray="[^"]+")?/>', svg)
    assert len(lines) == 1 and not lines[0][1]  # ours, solid (1.5 at 100k, 2.5 at 1m); the others have one point
    (x0, y0), (x1, y1) = [tuple(map(float, p.split(","))) for p in lines[0][0].split()]
    assert x0 < x1 and y1 < y0  # 1m right of 100k; the larger value higher up
    assert svg.count("<circle") == 4 and ">theirs</text>" in svg and 'stroke-dasharray="6 4"/>' in svg  # a reference
