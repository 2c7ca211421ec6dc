#!/usr/bin/env python
"""Render the results pages (docs/results/*.md) and the README's headline table from the benchmark records.

Every benchmark in tools/ that prints a ``RESULT`` line also writes a JSON record to ``results/<script>--<hash>.json``
(``tools/_common.py:record``: command, commit, date, machine with its raw env speed, seeds, per-seed numbers, medians,
the RESULT fields). This script reads those records as JSON only (nothing in a record is imported or evaluated) and
writes ``docs/results/index.md`` (one row per record), one page per benchmark family (:data:`PAGES`, the Results
section of mkdocs.yml) and the table between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in README.md.
Output depends only on the records and the scripts' docstrings: the same inputs give the same bytes. Every record shows
the commit it was measured on.

    .venv/bin/python tools/render_results.py           # write what changed
    .venv/bin/python tools/render_results.py --check   # exit 1 if a rendered file is out of date (CI)
"""
import argparse
import ast
import glob
import html
import json
import math
import os
import re
import sys
from typing import Optional

from _common import ENV_SPS_ENV, RECORD_SCHEMA, ROOT, portable, record_key

# page (docs/results/<page>.md) -> (title, benchmark scripts in tools/), in the order of mkdocs.yml's Results section
PAGES = {
    "sample_efficiency": ("Sample efficiency", ["bench_sample_efficiency"]),
    "learning": ("Learning (demo)", ["bench_learning"]),
    "throughput": ("Throughput", ["bench_throughput", "bench_batched_env", "bench_batched_e2e",
                                   "bench_tracking", "bench_learner_device"]),
    "matrace": ("MA-Trace", ["bench_matrace"]),
    "mast": ("MAST", ["bench_mast"]),
    "aggregation": ("Aggregation (NIGT)", ["bench_aggregation"]),
    "league": ("League", ["bench_league", "bench_league_battle", "bench_league_tag", "bench_league_scale",
                          "bench_best_response"]),
    "exploitability": ("Exploitability", ["bench_exploitability"]),
    "scale_model": ("Sizing model", ["scale_model"]),
    "scaling": ("Scaling across nodes", ["bench_scaling"]),
    "faults": ("Node faults", ["fault_matrix", "probe_recovery"]),
    "soak": ("Soak", ["soak"]),
}
PAGE_OF = {script: page for page, (_, scripts) in PAGES.items() for script in scripts}
# the RESULT fields the README and the overview show (any other field is on the benchmark's page)
HEADLINE = {
    "bench_sample_efficiency": ["mappo_100k", "mappo_500k", "mappo_1m", "epymarl_100k", "epymarl_500k", "ref_500k"],
    "bench_learning": ["return", "env_steps", "wall_s"],
    "bench_throughput": ["raw_sps", "actor_sps", "ratio"],
    "bench_batched_env": ["raw_sps_1024", "collect_sps", "collect_ratio"],
    "bench_batched_e2e": ["ref_sps", "best_sps", "best_ratio", "best_ratio_cold", "shipped_ratio"],
    "bench_tracking": ["tensorboard_ratio", "wandb_ratio", "mlflow_ratio", "eval_ratio"],
    "bench_learner_device": ["rmappo_smax_size_speedup", "mappo_speedup", "qmix_speedup", "gpu"],
    "bench_matrace": ["actor_vs_raw", "lag_matrace", "lag_nocorr", "return"],
    "bench_mast": ["retained", "train_flops_ratio"],
    "bench_aggregation": ["straggler_ratio", "malenia_straggler_ratio"],
    "bench_league": ["c4_vs_lookahead", "league_vs_selfplay", "league_vs_selfplay_ci"],
    "bench_league_battle": ["charge_first", "charge_last"],
    "bench_league_tag": ["capture_first", "capture_last"],
    "bench_league_scale": ["members", "status_s", "report_s"],
    "bench_best_response": ["br_fraction"],
    "bench_exploitability": ["kuhn_selfplay", "kuhn_league", "leduc_selfplay", "leduc_league"],
    "scale_model": ["max_err", "mean_err", "within_20pct", "batched_max_err", "batched_mean_err"],
    "fault_matrix": ["cases", "ended_in_bound", "trained_on", "rows_lost", "duplicated"],
    "probe_recovery": ["default_exit", "recovery_listened", "recovery_finalized", "recovery_mpirun_exited"],
    "bench_scaling": ["weak_eff_8_min", "straggler_malenia_per_s", "straggler_allreduce_per_s", "max_pred_err"],
    "soak": ["max_rss_growth", "fds_growth"],
}
# the record the README's headline shows for a benchmark run with several commands (else: its default command, else the
# newest record): the one the README's text quotes
HEADLINE_RECORD = {
    "bench_learning": "bench_learning--d1aee2a1b9",  # make demo's config and layout on PettingZoo
    "bench_sample_efficiency": "bench_sample_efficiency--512382d57e",  # the shipped MAPPO against EPyMARL's
    "bench_batched_env": "bench_batched_env--9ae657b6e9",  # MPE, collect with double-buffered sampling (--parts 2)
    "scale_model": "scale_model--1439992215",  # the check that gates the model: injected costs, 12 layouts
    "bench_learner_device": "bench_learner_device--d110e07545",  # CPU against an H200 (the others: CPU only)
    "bench_scaling": "bench_scaling--affa1eaa9a",  # every flow, weak and strong, 1-8 nodes (the others: parts of it)
    "fault_matrix": "fault_matrix--84b78c4602",  # every flow x freeze, kill, slow (the others: fewer flows or faults)
    "bench_batched_e2e": "bench_batched_e2e--52c7a5047f",  # against JaxMARL's IPPO, 3 rounds, cold and warm cache
}
# What a results page opens with: hpcmarl against each reference at each budget, the numbers read from the records
# named (page -> [(caption, [(row, record id, RESULT field prefix)][, columns])]; a row's cells are its RESULT fields
# <prefix>_<column>, the columns by default every budget (100k, 2m, ...) of the table's rows)
SE = "bench_sample_efficiency--"
STANDING = {
    "sample_efficiency": [
        ("MPE `simple_spread` (PettingZoo): return summed over the agents, median of seeds", [
            ("hpcmarl MAPPO (`simple_spread_mappo.yaml`)", SE + "512382d57e", "mappo"),
            ("hpcmarl MAPPO, held-out seeds", SE + "6184e1456d", "mappo"),
            ("EPyMARL MAPPO", SE + "512382d57e", "epymarl")]),
        ("SMAX `3m`: win rate, median of seeds", [
            ("hpcmarl MAPPO (`smax_mappo.yaml`)", SE + "ba689eb643", "smax_mappo"),
            ("hpcmarl MA-Trace (`smax_matrace.yaml`)", SE + "d9f5d0bea4", "smax_matrace"),
            ("hpcmarl QMIX (`smax_qmix.yaml`)", SE + "e4cfa6cf6a", "smax_qmix"),
            ("hpcmarl MAST (`smax_mast.yaml`)", SE + "bba24573e6", "mast_scale"),
            ("JaxMARL MAPPO", SE + "ba689eb643", "jaxmarl_mappo"),
            ("JaxMARL IPPO", SE + "ba689eb643", "jaxmarl_ippo"),
            ("JaxMARL QMIX", SE + "7a8457bd3c", "jaxmarl_qmix")]),
        ("SMAX `2s3z`: win rate, median of seeds", [
            ("hpcmarl MAPPO (`smax_mappo.yaml`)", SE + "7839ed3104", "smax_mappo"),
            ("hpcmarl MAPPO, held-out seeds", SE + "93c43492b3", "smax_mappo"),
            ("hpcmarl QMIX (`smax_qmix.yaml`)", SE + "cf75967e60", "smax_qmix"),
            ("hpcmarl MAST (`smax_mast.yaml`)", SE + "cf75967e60", "mast_scale"),
            ("JaxMARL MAPPO", SE + "7839ed3104", "jaxmarl_mappo"),
            ("JaxMARL QMIX", SE + "564d7c5239", "jaxmarl_qmix")]),
        ("Level-Based Foraging `Foraging-8x8-2p-2f-coop` (time limit 50, best 1.0): return summed over the agents, "
         "median of seeds", [
            ("hpcmarl MAPPO (`lbf_mappo.yaml`), held-out seeds", SE + "efb7c81794", "lbf_mappo")]),
        ("VMAS `navigation`: return summed over the agents, median of seeds", [
            ("hpcmarl MAPPO (`vmas_navigation_mappo.yaml`)", SE + "dbd814d200", "newdc"),
            ("BenchMARL MAPPO", SE + "805e77e81e", "benchmarl")]),
    ],
    "exploitability": [
        ("NashConv (0 at a Nash equilibrium; lower is better), median of the seeds at the largest budget: self-play's "
         "newest snapshot, the best league arm's meta-Nash mixture (that arm), PSRO with exact best responses, "
         "OpenSpiel's NFSP", [
             ("Kuhn poker, 1M env steps", "bench_exploitability--b55feb4c06", "kuhn"),
             ("Leduc poker, 2M env steps", "bench_exploitability--88d0c2d199", "leduc")],
         ["selfplay", "league", "league_arm", "exact_br", "nfsp"]),
    ],
}
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
GENERATED = ("<!-- generated by tools/render_results.py from results/*.json: edit the records or the script, "
             "not this file -->")
PYTHON = ".venv/bin/python"


class RecordError(ValueError):
    pass


# --------------------------------------------------------------------------------------------------
# reading and checking records (JSON only)
# --------------------------------------------------------------------------------------------------
def _no_constant(name):
    raise ValueError(f"{name} is not JSON (a record holds null where a number is undefined)")


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_record(name: str, rec) -> dict:
    """``rec`` (parsed from the file ``name``) if it is a well-formed record, else :class:`RecordError` naming the
    file and the field."""
    def need(cond, msg):
        if not cond:
            raise RecordError(f"{name}: {msg}")

    need(isinstance(rec, dict), "not a record (the top level must be a JSON object)")
    missing = [k for k in ("schema", "script", "args", "command", "commit", "dirty", "date", "machine", "result")
               if k not in rec]
    need(not missing, f"missing field(s) {', '.join(missing)}")
    need(rec["schema"] == RECORD_SCHEMA, f"'schema' is {rec['schema']!r}; this renderer reads schema {RECORD_SCHEMA}")
    need(isinstance(rec["script"], str) and rec["script"] in PAGE_OF,
         f"'script' {rec['script']!r} is not a benchmark of tools/ (known: {', '.join(sorted(PAGE_OF))})")
    need(isinstance(rec["args"], list) and all(isinstance(a, str) for a in rec["args"]),
         "'args' must be a list of strings")
    key = record_key(rec["script"], rec["args"])
    need(re.fullmatch(re.escape(key) + r"(-[2-9]|-[1-9]\d+)?\.json", os.path.basename(name)) is not None,
         f"the file name does not match its script and arguments (expected {key}.json, or {key}-<n>.json for its "
         "n-th invocation)")
    need(isinstance(rec["command"], str), "'command' must be a string")
    need(isinstance(rec["commit"], str) and re.fullmatch(r"[0-9a-f]{7,40}|unknown", rec["commit"]) is not None,
         "'commit' must be a hex commit id or 'unknown'")
    need(isinstance(rec["dirty"], bool), "'dirty' must be true or false")
    need(isinstance(rec["date"], str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["date"]) is not None,
         "'date' must be UTC ISO 8601 (YYYY-MM-DDTHH:MM:SSZ)")
    m = rec["machine"]
    need(isinstance(m, dict), "'machine' must be an object")
    need(m.get("env_sps") is None or _is_num(m["env_sps"]), "'machine.env_sps' must be a number or null")
    need(all(v is None or isinstance(v, (str, int, float)) for v in m.values()),
         "'machine' values must be strings, numbers or null")
    need(isinstance(rec["result"], dict) and rec["result"], "'result' must be a non-empty object")
    need(all(isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_.]+", k) for k in rec["result"]),
         "'result' field names must be letters, digits, '_' or '.'")
    need(all(v is None or isinstance(v, (str, int, float)) for v in rec["result"].values()),
         "'result' values must be numbers, strings or null")
    need(rec.get("result_line") is None or isinstance(rec["result_line"], str), "'result_line' must be a string")
    seeds = rec.get("seeds")
    need(seeds is None or (isinstance(seeds, list) and all(isinstance(s, (int, str)) for s in seeds)),
         "'seeds' must be a list of seeds or null")
    for k in ("per_seed", "medians", "extra"):
        need(rec.get(k) is None or isinstance(rec[k], dict), f"'{k}' must be an object or null")
    tables = (rec.get("extra") or {}).get("tables")
    if tables is not None:
        need(isinstance(tables, dict), "'extra.tables' must be an object")
        for t, spec in tables.items():
            need(isinstance(spec, dict) and isinstance(spec.get("columns"), list) and isinstance(spec.get("rows"), list)
                 and all(isinstance(r, list) and len(r) == len(spec["columns"]) for r in spec["rows"]),
                 f"'extra.tables.{t}' must hold 'columns' and 'rows' of that many cells")
    history = rec.get("history", [])
    need(isinstance(history, list) and all(isinstance(h, dict) and isinstance(h.get("commit"), str)
                                           and isinstance(h.get("date"), str) and isinstance(h.get("result"), dict)
                                           and isinstance(h.get("dirty"), bool) for h in history),
         "'history' must list earlier invocations, each with its commit, dirty flag, date and result")
    return rec


def earlier(rec) -> str:
    """The earlier invocations kept in a record's ``history`` (records written before each invocation got its own
    file): their dates, commits and RESULT fields."""
    return "; ".join(f"{esc(h['date'][:10])} {provenance(h)}: "
                     + ", ".join(f"{esc(k)}={exact(v)}" for k, v in h["result"].items())
                     for h in rec.get("history", []))


def load_records(results_dir: str) -> list:
    """Every record in ``results_dir`` (sorted by file name), checked, each with its ``id`` (the file name without
    ``.json``); :class:`RecordError` on the first bad one."""
    out = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        name = os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path
        try:
            with open(path) as f:
                rec = json.load(f, parse_constant=_no_constant)
        except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            raise RecordError(f"{name}: not valid JSON ({e})") from None
        out.append(check_record(name, rec))
        rec["id"] = os.path.basename(path)[:-len(".json")]
    return out


def ordered(records: list, script: str) -> list:
    """``script``'s records: the default command first, then by command; a command's invocations oldest first."""
    def nth(r):  # <key>-<n>: the n-th invocation; the first has no number
        tail = r["id"].rpartition("-")[2]
        return int(tail) if r["id"] != record_key(r["script"], r["args"]) else 1

    mine = (r for r in records if r["script"] == script)
    return sorted(mine, key=lambda r: (bool(r["args"]), r["command"], nth(r)))


def others(rec, records: list) -> str:
    """Links to the other invocations of ``rec``'s command (each its own record), with their dates and commits."""
    return "; ".join(f"[{esc(r['id'])}](#{r['id']}) {esc(r['date'][:10])} {provenance(r)}"
                     for r in ordered(records, rec["script"]) if r["args"] == rec["args"] and r is not rec)


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------
def esc(text) -> str:
    """Text safe in a Markdown table cell (no raw HTML, no cell breaks, no machine paths: :func:`portable`)."""
    return (portable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
            .replace("\n", " "))


def code(text) -> str:
    t = portable(text).replace("`", "'").replace("|", "\\|").replace("\n", " ")
    return f"`{t}`"


def num(v) -> str:
    """A number as the pages show it: integers as they are, floats to 4 significant digits (1,000 and more: whole)."""
    if v is None:
        return "–"
    if isinstance(v, bool) or isinstance(v, str):
        return esc(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(num(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{esc(k)}: {num(x)}" for k, x in v.items()) + "}"
    return esc(v)


def exact(v) -> str:
    """A RESULT field's value as recorded (the benchmark's own rounding)."""
    return "–" if v is None else esc(v if isinstance(v, str) else repr(v))


def table(columns, rows) -> list:
    out = ["| " + " | ".join(esc(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def flatten(d, prefix=""):
    """``{"a": {"b": x}}`` -> ``[("a / b", x)]`` (leaves: anything that is not an object)."""
    out = []
    for k, v in d.items():
        name = f"{prefix} / {k}" if prefix else str(k)
        out += flatten(v, name) if isinstance(v, dict) else [(name, v)]
    return out


def short(commit: str) -> str:
    return commit[:7] if commit != "unknown" else "unknown"


def provenance(rec) -> str:
    """The commit a record was measured on (every record shows it, so a number from older code says so)."""
    c = code(short(rec["commit"]))
    return f"{c} with uncommitted changes" if rec["dirty"] else c


def machine_text(m: dict) -> str:
    parts = [m.get("cpu") or "unknown CPU"]
    if m.get("cores") is not None:
        usable = m.get("usable_cores")
        parts.append(f"{m['cores']} cores" + (f" ({usable} usable)" if usable not in (None, m["cores"]) else ""))
    if m.get("memory_gib") is not None:
        parts.append(f"{m['memory_gib']} GiB")
    for k, label in (("os", ""), ("python", "Python "), ("torch", "torch ")):
        if m.get(k):
            parts.append(f"{label}{m[k]}")
    return esc(", ".join(str(p) for p in parts))


def env_speed(m: dict) -> str:
    return f"{m['env_sps']:,.0f}" if _is_num(m.get("env_sps")) else "–"


def headline(rec) -> str:
    fields = [k for k in HEADLINE.get(rec["script"], []) if k in rec["result"]] or list(rec["result"])[:4]
    return ", ".join(f"{esc(k)} {exact(rec['result'][k])}" for k in fields)


def args_text(rec) -> str:
    return code(" ".join(rec["args"])) if rec["args"] else "(defaults)"


def docstring(script: str, tools_dir: str) -> str:
    path = os.path.join(tools_dir, f"{script}.py")
    with open(path) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return re.sub(r":(?:class|func|mod|meth|data|attr):`", "`", doc).replace("``", "`")


def usage(script: str, doc: str) -> str:
    """The docstring's first usage line without its optional parts, else the script with its defaults."""
    for line in doc.splitlines():
        line = line.strip()
        if f"tools/{script}.py" in line and line.startswith(PYTHON):
            return re.split(r"\s+\[|\s+#", line)[0].strip()
    return f"{PYTHON} tools/{script}.py"


def record_section(rec, records: list) -> list:
    key = rec["id"]
    m = rec["machine"]
    out = [f"### {code(rec['command'])} {{#{key}}}", ""]
    info = [("commit", provenance(rec)), ("date (UTC)", esc(rec["date"].replace("T", " ").rstrip("Z"))),
            ("machine", machine_text(m)),
            ("raw env speed", f"{env_speed(m)} env steps/s ({esc(m.get('env_sps_measure') or ENV_SPS_ENV)})"),
            ("record", code(f"results/{key}.json"))]
    if rec.get("history"):
        info.append(("earlier invocations (kept in the record)", earlier(rec)))
    siblings = others(rec, records)
    if siblings:
        info.append(("other invocations (records of their own)", siblings))
    if rec.get("seeds") is not None:
        info.insert(4, ("seeds", ", ".join(esc(s) for s in rec["seeds"])))
    out += table(["", ""], [[f"**{k}**", v] for k, v in info]) + [""]
    out += ["**RESULT**", ""] + table(["field", "value"], [[code(k), exact(v)] for k, v in rec["result"].items()])
    out.append("")
    seeds = rec.get("seeds") or []
    if rec.get("per_seed"):
        rows = flatten(rec["per_seed"])
        by_seed = seeds and all(isinstance(v, list) and len(v) == len(seeds) for _, v in rows)
        cols = ["quantity"] + ([f"seed {s}" for s in seeds] if by_seed else ["values"])
        body = [[esc(k)] + ([num(x) for x in v] if by_seed else [num(v)]) for k, v in rows]
        out += ["**Per seed** (–: none, e.g. a target not reached)", ""] + table(cols, body) + [""]
    if rec.get("medians"):
        out += ["**Medians over seeds**", ""] + table(["quantity", "median"],
                                                    [[esc(k), num(v)] for k, v in flatten(rec["medians"])]) + [""]
    extra = dict(rec.get("extra") or {})
    plot = extra.pop("plot", None)  # a PNG the benchmark drew beside the docs (docs/results/img/<record>.png)
    if isinstance(plot, str) and re.fullmatch(r"docs/results/img/[\w.-]+\.png", plot):
        out += [f"![{esc(key)}]({plot[len('docs/results/'):]})", ""]
    for name, t in (extra.pop("tables", None) or {}).items():
        out += [f"**{esc(name)}**", ""] + table(t["columns"], [[num(c) for c in r] for r in t["rows"]]) + [""]
    if extra:
        out += ["**Other numbers**", ""] + table(["quantity", "value"], [[esc(k), num(v)] for k, v in flatten(extra)])
        out.append("")
    return out


def budget_steps(budget: str) -> float:
    """``"250k"`` -> 250000.0, ``"2m"`` -> 2000000.0 (the budgets' order)."""
    return float(budget[:-1]) * {"k": 1e3, "m": 1e6}[budget[-1]]


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def curves_svg(budgets: list, series: list) -> str:
    """A standing table's learning curves as an SVG line chart: x the budgets (evenly spaced, in order), y the values,
    one line per row ``(label, {budget: value})`` (hpcmarl's solid, a reference's dashed) with a legend. Plain text,
    the same bytes for the same numbers (``--check`` compares it)."""
    W, H, left, right, top, bottom = 800, 300, 56, 340, 14, 36
    def drawn(v) -> bool:
        return _is_num(v) and math.isfinite(v)

    pts = [v for _, vals in series for v in vals.values() if drawn(v)]
    lo, hi = (min(pts), max(pts)) if pts else (0.0, 1.0)
    raw = (hi - lo) / 4 or 0.25
    unit = 10.0 ** math.floor(math.log10(raw))
    step = next(m * unit for m in (1, 2, 5, 10) if m * unit >= raw)  # a grid step of 1, 2 or 5 x 10^k
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    hi = hi if hi > lo else lo + step

    def x(i):
        return left + (W - left - right) * (i / (len(budgets) - 1) if len(budgets) > 1 else 0.5)

    def y(v):
        return top + (H - top - bottom) * (hi - v) / (hi - lo)

    def text(t):
        return html.escape(t.replace("`", ""))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">', f'<rect width="{W}" height="{H}" fill="white"/>']
    for k in range(round((hi - lo) / step) + 1):  # horizontal grid and the y labels
        v = lo + step * k
        out += [f'<line x1="{left}" x2="{W - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>',
                f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{round(v, 10):g}</text>']
    for i, b in enumerate(budgets):
        out.append(f'<text x="{x(i):.1f}" y="{H - bottom + 16}" text-anchor="middle">{text(b)}</text>')
    out.append(f'<text x="{(left + W - right) / 2:.1f}" y="{H - 4}" text-anchor="middle">env steps</text>')
    for n, (label, vals) in enumerate(series):
        color = PALETTE[n % len(PALETTE)]
        dash = "" if label.startswith("hpcmarl") else ' stroke-dasharray="6 4"'
        xy = [(x(i), y(vals[b])) for i, b in enumerate(budgets)
              if drawn(vals.get(b))]
        if len(xy) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in xy)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        out += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"/>' for px, py in xy]
        ly = top + 8 + 18 * n
        out += [f'<line x1="{W - right + 14}" x2="{W - right + 40}" y1="{ly}" y2="{ly}" stroke="{color}" '
                f'stroke-width="2"{dash}/>', f'<text x="{W - right + 46}" y="{ly + 4}">{text(label)}</text>']
    return "\n".join(out + ["</svg>"]) + "\n"


def standing(page: str, records: list, images: Optional[dict] = None) -> list:
    """The page's opening tables (:data:`STANDING`): one row per arm, one column per budget, each row naming its
    record, seeds and commit; a table from several invocations, commits or CPUs says so under it. A table whose columns
    are budgets is drawn too (:func:`curves_svg`, into ``images``: file name -> SVG, under the pages' ``img/``)."""
    by_id = {r["id"]: r for r in records}
    out = []
    for k, (caption, rows, *named) in enumerate(STANDING.get(page, [])):
        if any(rid not in by_id for _, rid, _ in rows):  # another results folder (tests/unit checks ours)
            continue
        pattern = r"_(" + ("|".join(map(re.escape, named[0])) if named else r"\d+[km]") + ")"
        fields = [(label, by_id[rid], {m.group(1): v for k, v in by_id[rid]["result"].items()
                                       if (m := re.fullmatch(re.escape(prefix) + pattern, k))})
                  for label, rid, prefix in rows]
        budgets = named[0] if named else sorted({b for _, _, f in fields for b in f}, key=budget_steps)
        body = [[esc(label), ", ".join(esc(x) for x in rec["seeds"] or [])]
                + [exact(f[b]) if b in f else "" for b in budgets]
                + [f"[{esc(rec['id'].split('--', 1)[1])}](#{rec['id']}) {provenance(rec)}"]
                for label, rec, f in fields]
        out += [f"**{esc(caption)}**", ""] + table(["", "seeds"] + budgets + ["record, commit"], body) + [""]
        recs = list({id(r): r for _, r, _ in fields}.values())
        commits, cpus = {r["commit"] for r in recs}, {r["machine"].get("cpu") for r in recs}
        if len(recs) > 1:
            cpu_names = ", ".join(esc(c) for c in sorted(map(str, cpus)))
            out += [f"From {len(recs)} invocations, {len(commits)} commit{'s' if len(commits) > 1 else ''} and "
                    f"{len(cpus)} CPU type{'s' if len(cpus) > 1 else ''} ({cpu_names}): numbers at fixed env steps do "
                    "not depend on the machine's speed, but another commit or CPU type is another sample of a seed.",
                    ""]
        if not named and len(budgets) > 1 and images is not None:
            name = f"standing-{page}-{k + 1}.svg"
            images[name] = curves_svg(budgets, [(label, f) for label, _, f in fields])
            out += [f"![{esc(caption.replace('`', ''))}: the rows above as curves](img/{name})", ""]
    if out:
        out = ["## Standing", "", "hpcmarl and the references at each budget, read from the records below "
               "(the RESULT line's rounding; each row links its record).", ""] + out
    return out


def family_page(page: str, records: list, tools_dir: str, images: Optional[dict] = None) -> str:
    """A results page; the images it shows go into ``images`` (:func:`standing`)."""
    title, scripts = PAGES[page]
    out = [f"# {title}", "", GENERATED, "",
           "Numbers rendered from the benchmark records in `results/` (one JSON file per invocation; "
           "[how records work](index.md)). Each record names the commit it was measured on.", ""]
    out += standing(page, records, images)
    for script in scripts:
        doc = docstring(script, tools_dir)
        summary, _, rest = doc.partition("\n\n")
        out += [f"## {script}", "", f"**What it measures.** {' '.join(summary.split())}", ""]
        if rest.strip():
            out += [f"From `tools/{script}.py`:", "", "```text", rest.strip("\n"), "```", ""]
        mine = ordered(records, script)
        if not mine:
            out += [f"**No record yet.** Produce one (then re-render with `{PYTHON} tools/render_results.py`):", "",
                    "```bash", usage(script, doc), "```", ""]
            continue
        out += ["Reproduce a record: its command below, run from the repository root with the project's Python "
                f"(`{PYTHON}` after `make setup`).", ""]
        for rec in mine:
            out += record_section(rec, records)
    return "\n".join(out).rstrip("\n") + "\n"


def index_page(records: list) -> str:
    out = ["# Results", "", GENERATED, "",
           "Every benchmark in `tools/` that prints a `RESULT` line also writes a JSON record under `results/`: "
           "the command, the git commit (and whether the tree had uncommitted changes), the date (UTC), the machine "
           f"(CPU model, cores, memory, versions and its **raw env speed**: random-action `{ENV_SPS_ENV}` env steps "
           "per second in one process, measured for 2 s right after the benchmark, so that records from different "
           "machines can be compared), the seeds, per-seed numbers, medians and the RESULT fields. A record is keyed "
           "by script and arguments (`results/<script>--<hash of the arguments>.json`) and is never rewritten: "
           "re-running a benchmark with the same arguments writes a new record beside it (`<key>-2.json`, "
           "`<key>-3.json`, ...), each listed and linked under the others (nothing measured is lost). Records older "
           "than this rule keep their earlier invocations in a `history` field, shown under them. Set "
           "`HPCMARL_NO_RECORD=1` to write none, `HPCMARL_RESULTS_DIR` to write them elsewhere.", "",
           "These pages and the README's headline table are rendered from the records by "
           f"`{PYTHON} tools/render_results.py` (`--check`: fail when a rendered file is out of date); nothing "
           "here is copied by hand. Each record names the commit it was measured on (and whether the tree had "
           "uncommitted changes): a number from older code says so.", ""]
    if records:
        rows = []
        for page, (title, scripts) in PAGES.items():
            for script in scripts:
                for r in ordered(records, script):
                    rows.append([f"[{esc(title)}]({page}.md#{r['id']})", code(script), args_text(r), headline(r),
                                 provenance(r), esc(r["date"][:10]), env_speed(r["machine"])])
        out += table(["page", "benchmark", "arguments", "headline", "commit", "date", "raw env steps/s"], rows)
    else:
        out.append("**No record yet.** Run a benchmark (each page gives its command), then re-render.")
    missing = [s for _, (_, scripts) in PAGES.items() for s in scripts if not any(r["script"] == s for r in records)]
    if records and missing:
        out += ["", "Benchmarks without a record yet: " + ", ".join(
            f"[`{s}`]({PAGE_OF[s]}.md)" for s in missing) + "."]
    out += ["", "Pages: " + ", ".join(f"[{title}]({page}.md)" for page, (title, _) in PAGES.items()) + "."]
    return "\n".join(out) + "\n"


def readme_table(records: list) -> str:
    """The README's headline table: per benchmark the record :data:`HEADLINE_RECORD` names, else that of its default
    command, else its newest (each row links its results page). A record made with uncommitted changes is never a
    headline (:class:`RecordError` where :data:`HEADLINE_RECORD` names one)."""
    rows = []
    for page, (title, scripts) in PAGES.items():
        for script in scripts:
            named = [r for r in records if r["id"] == HEADLINE_RECORD.get(script)]
            if named and named[0]["dirty"]:
                raise RecordError(f"HEADLINE_RECORD names {HEADLINE_RECORD[script]}, a record made with uncommitted "
                                  "changes: a headline comes from a clean commit")
            mine = [r for r in records if r["script"] == script and not r["dirty"]]
            if not mine:
                continue
            r = max(mine, key=lambda r: (r["id"] == HEADLINE_RECORD.get(script), not r["args"],
                                         r["date"], r["command"]))  # the quoted record, the default command first
            rows.append([f"[{esc(title)}: `{script}`](docs/results/{page}.md)", headline(r),
                         f"{provenance(r)}, {esc(r['date'][:10])}", env_speed(r["machine"])])
    if not rows:
        return ("No benchmark record yet: [docs/results](docs/results/index.md) gives each benchmark's command; "
                "its record appears here once it has run.")
    return "\n".join(table(["benchmark", "headline", "commit, date", "raw env steps/s"], rows))


def replace_between(text: str, body: str) -> str:
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        return text
    return text[:i + len(BEGIN)] + "\n" + body.strip("\n") + "\n" + text[j:]


def render(results_dir: str, docs_dir: str, readme: str, tools_dir: str) -> dict:
    """``{path: content}`` of every file this script writes."""
    records = load_records(results_dir)
    out = {os.path.join(docs_dir, "index.md"): index_page(records)}
    images = {}
    for page in PAGES:
        out[os.path.join(docs_dir, f"{page}.md")] = family_page(page, records, tools_dir, images)
    out.update({os.path.join(docs_dir, "img", name): svg for name, svg in images.items()})
    if readme and os.path.exists(readme):
        with open(readme) as f:
            text = f.read()
        if BEGIN in text and END in text:
            out[readme] = replace_between(text, readme_table(records))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a rendered file is out of date")
    ap.add_argument("--results", default=os.path.join(ROOT, "results"), help="the records' directory")
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs", "results"), help="where the pages go")
    ap.add_argument("--readme", default=os.path.join(ROOT, "README.md"), help="README with the markers ('' : none)")
    ap.add_argument("--tools", default=os.path.join(ROOT, "tools"), help="the benchmark scripts (docstrings)")
    a = ap.parse_args(argv)
    try:
        files = render(a.results, a.docs, a.readme, a.tools)
    except RecordError as e:
        print(f"render_results: bad record: {e}", file=sys.stderr)
        return 2
    stale = []
    for path, content in files.items():
        try:
            with open(path) as f:
                same = f.read() == content
        except OSError:
            same = False
        if same:
            continue
        stale.append(os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path)
        if not a.check:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w") as f:
                f.write(content)
    if a.check:
        if stale:
            print("out of date (run tools/render_results.py): " + ", ".join(stale), file=sys.stderr)
            return 1
        print(f"{len(files)} rendered file(s) up to date")
        return 0
    print(f"wrote {len(stale)} of {len(files)} file(s)" + (": " + ", ".join(stale) if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
