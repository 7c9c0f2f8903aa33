"""Results as Markdown (printed, written beside the results file, and by `benchmarks.publish` into
BENCHMARKS.md) and as the issue's targets, each marked met or not, with the clock it is measured on.

A benchmark that did not finish everything it was asked for (an error, fewer sizes or updates than asked,
lost updates) is incomplete, and every target that rests on it is not met, with the reason."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import rrm
from benchmarks.common import PERCENTILES
from benchmarks.etcd import etcd_version

BENCHMARKS = (
    "propagation",
    "minimal",
    "status_path",
    "agent_cpu",
    "replicas",
    "footprint",
    "throughput",
    "storm",
    "ready",
    "provisioning",
)
# one result each, not one per size
SINGLE_RUNS = ("agent_cpu", "throughput", "storm", "ready", "provisioning")
WITH_ROUNDS = ("propagation", "minimal", "replicas", "ready")  # asked for `--rounds` updates per size
# Two replicas: a change written through A reaches the agents long-polling B "within the same latency" as
# those on A: B's p99 at most 1.5 x A's, or A's + 0.1 s (at 100 runtimes p99 is tens of ms, where a ratio
# alone is noise).
REPLICA_RATIO_LIMIT = 1.5
REPLICA_SLACK_SECONDS = 0.1

# The clocks the targets are measured on (every process of one Linux machine shares time.monotonic()).
FROM_REQUEST = "from the write request sent to applied by the agent's target, time.monotonic()"
FROM_ANSWER = "from the write's answer to applied by the agent's target, time.monotonic()"
PROCESS_CPU = "the rrm server process's CPU time (psutil, else /proc/<pid>/stat)"
IDLE_CLOCK = f"{PROCESS_CPU} over the window's time.monotonic() seconds; RSS sampled every 0.5 s"
ONE_AGENT_CLOCK = "the `rrm agent` process's CPU time over the window's time.monotonic(); RSS every 0.5 s"
STORM_CLOCK = "from SIGTERM to the last agent's status report to the new process, time.monotonic()"
WRITES_CLOCK = "component writes answered over the window's time.monotonic() seconds, 8 clients"
BURST_CLOCK = "states each agent took to apply, windows on time.monotonic() at the take"
RECEIPT_CLOCK = "states each agent received, windows on time.monotonic() at receipt"  # results before takes
READY_CLOCK = "from the write's answer to the first poll (every 0.05 s) showing Ready, time.monotonic()"
OUTCOME = "counts at the end (no clock)"
PROVISIONING_CPU = "rrm server and its worker processes' CPU time (psutil) / operations"
PROVISIONING_TIME = "from the first request (time.time()) to the last operation's finishedAt (server clock)"
LOCAL_CLOCK = "from the requests to the first poll (every 0.2 s) showing every runtime Connected"

Row = dict[str, Any]
MAX_SAMPLES = 64  # a longer list of numbers in a result is per-sample data, left out of the results file


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "rrm": rrm.__version__,
        "etcd": etcd_version() or "not installed",
    }


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def compact(value: Any) -> Any:
    """The results without per-sample arrays (long lists of numbers) and the payload: percentiles, counts and
    CPU figures stay, and a committed results file stays small."""
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items() if k != "payload" and not _samples(v)}
    if isinstance(value, list):
        return [compact(v) for v in value if not _samples(v)]
    return value


def _samples(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > MAX_SAMPLES
        and all(isinstance(v, int | float) or v is None for v in value)
    )


def describe_run(results: dict[str, Any]) -> str:
    """One paragraph: when, where, which tree, which command, smoke or not, complete or not."""
    m = results["machine"]
    tree = results.get("tree", {})
    text = (
        f"Run {m['date']} on {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, rrm {m['rrm']}, "
        f"etcd {m['etcd']}; agents and control plane share the machine. Command: `{results['command']}`."
    )
    if results.get("server_workers", 1) > 1:
        text += f" The fleet benchmarks' `rrm server` ran with `--workers {results['server_workers']}`."
    if tree:
        text += f" Tree: `{tree['describe']}`" + (
            " (uncommitted changes at run time)." if tree.get("dirty") else "."
        )
    if results.get("smoke"):
        text += f" **Smoke run, N = {results['smoke']}: not a measurement of the targets.**"
    reasons = results.get("incomplete")
    if reasons:
        text += " **Incomplete**: " + "; ".join(reasons) + "."
    elif "complete" in results:
        text += " Complete: every benchmark asked for finished all its sizes and updates."
    return text


def markdown(results: dict[str, Any]) -> str:
    parts = [describe_run(results)]
    parts += [section(name, results[name]) for name in BENCHMARKS if name in results]
    rows = results.get("targets", [])
    if rows:
        parts.append(
            "#### Targets (one 2-core machine, agents and control plane sharing it)\n\n" + targets_table(rows)
        )
    return "\n\n".join(part for part in parts if part) + "\n"


def targets_table(rows: list[Row], with_source: bool = False) -> str:
    """The targets as a table; `with_source`: a last column naming each row's results file (`source`)."""
    header = ["target", "wanted", "clock", "measured", "met"] + (["results file"] if with_source else [])
    return _table(
        header,
        [
            [t["target"], t["wanted"], t["clock"], t["measured"], _met(t["met"])]
            + ([t["source"]] if with_source else [])
            for t in rows
        ],
    )


def _met(met: bool | None) -> str:
    return "reported" if met is None else "yes" if met else "**no**"


def section(name: str, value: Any) -> str:
    """The tables of one benchmark's results; entries that failed are named with their error."""
    entries = as_list(value)
    done = [e for e in entries if "error" not in e]
    failed = [
        f"**{name} at N = {_size(e):,} did not complete**: {e['error']}" for e in entries if "error" in e
    ]
    body = SECTIONS[name](done if isinstance(value, list) else done[0]) if done else ""
    return "\n\n".join(part for part in [body, *failed] if part)


def _footprint(runs: list[dict[str, Any]]) -> str:
    rows = [
        [
            f"{r['size']:,}",
            f"{r['server']['cpu_cores']:.3f}",
            f"{r['server']['rss_mb_max']:.0f}",
            f"{r['load_generator_cpu_cores']:.3f}",
            f"{r['server']['seconds']:.0f}",
            str(sum(r["failed_requests"].values())),
        ]
        for r in runs
    ]
    header = ["idle agents", "control plane CPU (cores)", "control plane RSS max (MB)"]
    header += ["load generator CPU (cores)", "window (s)", "failed requests"]
    text = "#### Footprint (idle, the agent's default intervals)\n\n" + _table(header, rows)
    one = next((r["one_agent"] for r in runs if r.get("one_agent")), None)
    if one:
        text += (
            "\n\nOne `rrm agent` process (self-hosted target, idle): "
            f"RSS {one['rss_mb_max']:.1f} MB, CPU {one['cpu_percent_of_core']:.3f} % of a core "
            f"over {one['seconds']:.0f} s."
        )
    return text


def _throughput(t: dict[str, Any]) -> str:
    b = t["burst"]
    header = ["runtimes", "writes/s (no agents)", "write p50 s", "write p99 s"]
    header += ["writes/s in applies of 10 (no agents)", "burst writes/s (agents connected)"]
    row = [
        f"{t['runtimes']:,}",
        f"{t['writes_per_second']:.0f}",
        _s(t["write_latency"]["p50"]),
        _s(t["write_latency"]["p99"]),
        f"{t['batched']['writes_per_second']:.0f}" if "batched" in t else "-",
        f"{b['writes_per_second']:.0f}",
    ]
    window = f"{b['window_seconds']:g} s"
    if "taken_per_agent_max" in b:
        states = (
            f"each agent took (applied) at most {b['taken_per_agent_max']} states "
            f"(mean {b['taken_per_agent_mean']}), at most {b['taken_per_window_max']} within {window}, "
            f"of at most {b['received_per_agent_max']} received (mean {b['received_per_agent_mean']}, "
            f"at most {b['received_per_window_max']} within {window})"
        )
    else:  # a results file from before takes were counted apart from receipts
        states = (
            f"each agent was sent at most {b['states_per_agent_max']} states "
            f"(mean {b['states_per_agent_mean']}), at most {b['states_per_window_max']} within {window}"
        )
    return (
        "#### Write throughput\n\n"
        + _table(header, [row])
        + f"\n\nBurst of {b['writes']} writes to one component with {b['agents']:,} agents connected: "
        f"{states}; {b['agents_on_final_revision']:,}/{b['agents']:,} agents ended on the final revision "
        f"({b['seconds_until_all_final']:.1f} s after the burst began)."
    )


def _storm(s: dict[str, Any]) -> str:
    header = ["agents", "stop s", "start s", "all synced after restart s", "refused / failed requests"]
    row = [
        f"{s['size']:,}",
        f"{s['stop_seconds']:.1f}",
        f"{s['start_seconds']:.1f}",
        _s(s["synced_seconds_after_restart"]) if s["all_synced"] else "not all",
        ", ".join(f"{k} {v}" for k, v in sorted(s["failed_requests"].items())) or "0",
        str(s["lost"]),
    ]
    return "#### Reconnect storm\n\n" + _table([*header, "lost"], [row])


def _propagation(runs: list[dict[str, Any]]) -> str:
    def cells(latency: dict[str, Any] | None, missing: str = "unavailable") -> list[str]:
        return [_s(latency.get(p)) for p in PERCENTILES] if latency else [missing] * len(PERCENTILES)

    answer_rows, request_rows = [], []
    failures: list[str] = []
    for r in runs:
        rrm, etcd = r["rrm"], r["etcd"]
        ok = etcd["status"] == "ok"
        if "error" in rrm:
            failures.append(f"**rrm at N = {r['size']:,} did not complete**: {rrm['error']}")
        elif rrm.get("incomplete"):
            failures.append(f"**rrm at N = {r['size']:,}**: {rrm['incomplete']}")
        etcd_early = etcd["received_before_put_answer"] if ok else "-"
        early = f"{rrm.get('applied_before_admin_answer', '-')} / {etcd_early}"
        answer_rows.append(
            [
                f"{r['size']:,}",
                *cells(rrm.get("latency"), "failed"),
                *cells(etcd.get("latency")),
                str(rrm.get("lost", "-")),
                early,
                f"{rrm['body_bytes']:,}" if "body_bytes" in rrm else "-",
            ]
        )
        ratio = r.get("ratio_from_request", {})
        request_rows.append(
            [f"{r['size']:,}"]
            + cells(rrm.get("latency_from_request"), "failed")
            + cells(etcd.get("latency_from_request"))
            + [f"{ratio[p]:.2f}" if ratio.get(p) is not None else "-" for p in PERCENTILES]
        )
    header = ["N"] + [f"rrm {p} s" for p in PERCENTILES] + [f"etcd {p} s" for p in PERCENTILES]
    return (
        "#### Propagation, from the write's answer (admin API / etcd put) "
        "to applied (agent) / received (watcher)"
        + "\n\n"
        + _table([*header, "lost", "before the answer (rrm / etcd)", "body bytes"], answer_rows)
        + "\n\n#### Propagation, from the write request sent, with rrm / etcd per percentile\n\n"
        + _table(header + [f"rrm/etcd {p}" for p in PERCENTILES], request_rows)
        + "".join(f"\n\n{line}" for line in failures)
    )


def _replicas(runs: list[dict[str, Any]]) -> str:
    def cells(latency: dict[str, Any] | None) -> list[str]:
        return [_s(latency.get(p)) for p in PERCENTILES] if latency else ["-"] * len(PERCENTILES)

    def ratio_cells(ratio: dict[str, Any] | None) -> list[str]:
        ratio = ratio or {}
        return [f"{ratio[p]:.2f}" if ratio.get(p) is not None else "-" for p in PERCENTILES]

    ok = [r for r in runs if r.get("status") == "ok"]
    notes = [
        f"**two replicas at N = {r['size']:,} not measured**: {r['reason']}"
        for r in runs
        if r.get("status") == "unavailable"
    ]
    notes += [f"**two replicas at N = {r['size']:,}**: {r['incomplete']}" for r in ok if r.get("incomplete")]
    if not ok:
        return "\n\n".join(notes)
    sides = [f"on A {p} s" for p in PERCENTILES] + [f"on B {p} s" for p in PERCENTILES]
    sides += [f"B/A {p}" for p in PERCENTILES]
    answer_rows = [
        [
            f"{r['size']:,}",
            *cells(r["on_a"]["latency"]),
            *cells(r["on_b"]["latency"]),
            *ratio_cells(r["ratio_b_to_a"]),
            f"{r['on_a']['lost']} / {r['on_b']['lost']}",
            f"{r['on_a']['applied_before_admin_answer']} / {r['on_b']['applied_before_admin_answer']}",
        ]
        for r in ok
    ]
    request_rows = [
        [
            f"{r['size']:,}",
            *cells(r["on_a"]["latency_from_request"]),
            *cells(r["on_b"]["latency_from_request"]),
            *ratio_cells(r["ratio_b_to_a_from_request"]),
        ]
        for r in ok
    ]
    overall_rows = []
    for r in ok:
        one = (r.get("one_replica_sqlite") or {}).get("latency")
        to_one = (r.get("ratio_to_one_replica") or {}).get("p99")
        overall_rows.append(
            [
                f"{r['size']:,}",
                f"{r['agents']['a']:,} / {r['agents']['b']:,}",
                *cells(r["all"]["latency"]),
                *(cells(one) if one else ["not run"] * len(PERCENTILES)),
                f"{to_one:.2f}" if to_one is not None else "-",
                _s(r["admin_answer"]["p50"]),
                str(r["switched_replica"]),
                ", ".join(f"{k} {v}" for k, v in sorted(r["failed_requests"].items())) or "0",
                r["leader"],
            ]
        )
    overall_header = ["N", "agents on A / B"] + [f"2 replicas {p} s" for p in PERCENTILES]
    overall_header += [f"1 replica (SQLite) {p} s" for p in PERCENTILES]
    overall_header += ["2 / 1 p99", "admin answer p50 s", "switched replica", "failed requests", "leader"]
    return (
        "#### Two replicas on one PostgreSQL database, every update written through replica A: "
        "from A's answer to applied, agents long-polling A / B"
        + "\n\n"
        + _table(["N", *sides, "lost (A / B)", "before the answer (A / B)"], answer_rows)
        + "\n\n#### Two replicas, from the write request sent\n\n"
        + _table(["N", *sides], request_rows)
        + "\n\n#### Two replicas (all agents) against one replica on SQLite (propagation, same run), "
        "from the answer\n\n"
        + _table(overall_header, overall_rows)
        + "".join(f"\n\n{line}" for line in notes)
    )


def _ready(r: dict[str, Any]) -> str:
    agent, standin = r["agent_intervals"], r["standin"]
    latency = r["latency"]
    return (
        f"#### Ready: from the write's answer to `Ready` in the control plane ({r['size']} real `rrm agent` "
        f"processes at their defaults, wait {agent['wait_seconds']:g} s and heartbeat "
        f"{agent['heartbeat_seconds']:g} s, each beside the daprd stand-in at its defaults: rescan every "
        f"{standin['rescan_seconds']:g} s, {standin['init_delay_seconds']:g} s to initialise a component; "
        f"control plane polled every {r['poll_seconds']:g} s)\n\n"
        + _table(
            ["runtimes", "updates", "p50 s", "p99 s", "max s", "not Ready in time"],
            [
                [
                    str(r["size"]),
                    str(r["rounds"]),
                    _s(latency["p50"]),
                    _s(latency["p99"]),
                    _s(latency["max"]),
                    str(r["not_ready"]),
                ]
            ],
        )
    )


def _provisioning(r: dict[str, Any]) -> str:
    g, local = r["gardener"], r["local"]
    ops = g["operations"]
    cp = g["control_plane"]
    gardener_row = [
        f"{r['size']:,} gardener-aws, {r['tenants']} tenants",
        f"{ops.get('succeeded', 0):,} / {ops.get('failed', 0):,}"
        + ("" if g["finished"] else " (not finished)"),
        _s(g["seconds_until_last_succeeded"]),
        f"{g['cpu_ms_per_operation']:.1f}",
        f"{cp['cpu_cores']:.2f}",
        f"{cp['rss_mb_max']:.0f}",
        f"{g['shoots']:,} ({g['shoots_created']:,} created), one each: "
        + ("yes" if g["one_shoot_each"] else "**no**"),
        f"{g['tenants_with_bindings']}, one each: {'yes' if g['one_account_per_tenant'] else '**no**'}",
    ]
    states = local.get("environment_states", {})
    local_row = [
        f"{local['size']} local",
        f"{states.get('succeeded', 0)} / {states.get('failed', 0)}",
        local["error"] if "error" in local else _s(local["seconds_until_all_connected"]) + " (all Connected)",
        "-", "-", "-", "-", "-",
    ]  # fmt: skip
    header = ["environments at once", "succeeded / failed", "until the last succeeded s"]
    header += [
        "control plane CPU per operation ms",
        "control plane CPU (cores)",
        "control plane RSS max (MB)",
    ]
    header += ["Shoots", "tenants with an account"]
    return (
        "#### Provisioning: environments requested at once until every one succeeded (Gardener stand-in "
        "with a zero-time reconciler; simulated agents pair with the token read from each Shoot's Secret)\n\n"
        + _table(header, [gardener_row, local_row])
    )


def as_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, dict) else []


def _size(entry: dict[str, Any]) -> int:
    return int(entry.get("size", entry.get("runtimes", entry.get("updates", 0))))


# --- completeness ----------------------------------------------------------------------------------------


def problem(name: str, entry: dict[str, Any], rounds: int | None = None) -> str:
    """Why one benchmark entry (one size) did not finish what it was asked for; "" when it did."""
    if "error" in entry:
        return str(entry["error"])
    check = PROBLEMS.get(name, _generic_problem)
    return check(entry, rounds)


def _generic_problem(entry: dict[str, Any], rounds: int | None) -> str:
    if entry.get("status", "ok") != "ok":
        return str(entry.get("reason") or entry["status"])
    if entry.get("incomplete"):
        return str(entry["incomplete"])
    if entry.get("lost"):
        return f"{entry['lost']:,} updates lost"
    return ""


def _propagation_problem(entry: dict[str, Any], rounds: int | None) -> str:
    rrm, etcd = entry["rrm"], entry["etcd"]
    if "error" in rrm:
        return f"rrm: {rrm['error']}"
    if rrm.get("incomplete"):
        return str(rrm["incomplete"])
    asked = rounds or entry.get("rounds")
    done = (rrm["latency"]["count"] + rrm["lost"]) // max(1, entry["size"])
    if asked and done < asked:
        return f"{done} of {asked} updates"
    if rrm["lost"]:
        return f"{rrm['lost']:,} updates lost"
    if etcd.get("status") != "ok":
        return f"etcd baseline: {etcd.get('reason', etcd.get('status'))}"
    if etcd["lost"] or etcd.get("failed_watches"):
        return f"etcd baseline: {etcd['lost']:,} lost, {etcd.get('failed_watches', 0)} watches failed"
    return ""


def _replicas_problem(entry: dict[str, Any], rounds: int | None) -> str:
    if entry.get("status") != "ok":
        return f"not measured: {entry.get('reason', entry.get('status'))}"
    if entry.get("incomplete"):
        return str(entry["incomplete"])
    return f"{entry['all']['lost']:,} updates lost" if entry["all"]["lost"] else ""


def _footprint_problem(entry: dict[str, Any], rounds: int | None) -> str:
    synced = entry.get("agents_synced", entry["size"])
    return f"{synced:,} of {entry['size']:,} agents synced" if synced < entry["size"] else ""


def _storm_problem(entry: dict[str, Any], rounds: int | None) -> str:
    return f"{entry['lost']:,} agents never applied the update" if entry["lost"] else ""


def _ready_problem(entry: dict[str, Any], rounds: int | None) -> str:
    return f"{entry['not_ready']} not Ready in time" if entry["not_ready"] else ""


def _provisioning_problem(entry: dict[str, Any], rounds: int | None) -> str:
    if not entry["gardener"]["finished"]:
        return "gardener-aws environments did not finish"
    local = entry["local"]
    return f"local environments: {local['error']}" if "error" in local else ""


def _throughput_problem(entry: dict[str, Any], rounds: int | None) -> str:
    burst = entry["burst"]
    final, agents = burst["agents_on_final_revision"], burst["agents"]
    return f"{agents - final:,} agents not on the final revision after the burst" if final < agents else ""


def incomplete(results: dict[str, Any]) -> list[str]:
    """What the run did not finish of what it was asked (`results["asked"]`): every reason, [] if none."""
    reasons = []
    for name, asked in results.get("asked", {}).items():
        entries = as_list(results.get(name))
        measured = {_size(e) for e in entries}
        reasons += [f"{name} at {n:,}: not run" for n in asked["sizes"] if n not in measured]
        for entry in entries:
            why = problem(name, entry, asked.get("rounds"))
            if why:
                reasons.append(f"{name} at {_size(entry):,}: {why}")
    return reasons


# --- targets ---------------------------------------------------------------------------------------------


class _Rows:
    """Target rows of one results file; in a smoke run every target is reported not measured."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.rows: list[Row] = []
        self.smoke = results.get("smoke")

    def add(self, target: str, wanted: str, clock: str, measured: str, met: bool | None) -> None:
        if self.smoke:
            measured, met = f"not measured: smoke run, N = {self.smoke}, not a measurement", False
        self.rows.append(
            {"target": target, "wanted": wanted, "clock": clock, "measured": measured, "met": met}
        )

    def missing(self, target: str, wanted: str, clock: str, why: str) -> None:
        self.add(target, wanted, clock, f"not measured: {why}", False)


def targets(results: dict[str, Any]) -> list[Row]:
    """The targets of every benchmark the run was asked for (of every benchmark when it does not say), from
    one run's results; a benchmark asked for but absent is not measured."""
    asked = results.get("asked", BENCHMARKS)
    return [row for name in BENCHMARKS if name in asked for row in targets_of(name, results)]


def targets_of(name: str, results: dict[str, Any]) -> list[Row]:
    rows = _Rows(results)
    entries = as_list(results.get(name))
    rounds = results.get("asked", {}).get(name, {}).get("rounds")
    TARGETS[name](rows, entries, rounds)
    return rows.rows


def _at(entries: list[dict[str, Any]], size: int) -> dict[str, Any] | None:
    return next((e for e in entries if _size(e) == size), None)


def _unmet(entry: dict[str, Any] | None, name: str, size: int, rounds: int | None) -> str:
    """Why a target at `size` cannot be met by this entry ("" when the entry is complete)."""
    if entry is None:
        return f"no {name} run at N = {size:,}"
    why = problem(name, entry, rounds)
    return f"incomplete: {why[:160]}" if why else ""


def _measured(
    rows: _Rows,
    entries: list[dict[str, Any]],
    name: str,
    size: int,
    rounds: int | None,
    row: tuple[str, str, str],
) -> dict[str, Any] | None:
    """The entry of `size` to judge `row` (target, wanted, clock) by, or None after a row saying why not."""
    entry = _at(entries, size)
    why = _unmet(entry, name, size, rounds)
    if why or entry is None:
        rows.missing(*row, why)
        return None
    return entry


def _propagation_targets(rows: _Rows, entries: list[dict[str, Any]], rounds: int | None) -> None:
    for size, limit in ((1000, 0.3), (10000, 3.0)):
        target = f"real agents, {size:,} runtimes: propagation p99"
        wanted = f"≤ {limit:g} s, every update, nothing lost"
        entry = _measured(rows, entries, "propagation", size, rounds, (target, wanted, FROM_REQUEST))
        if entry is None:
            continue
        p99 = entry["rrm"]["latency_from_request"]["p99"]
        rows.add(target, wanted, FROM_REQUEST, f"{_s(p99)} s", p99 is not None and p99 <= limit)
    for entry in entries:
        cpu = update_cpu_per_1000(entry)
        if cpu is not None:
            rows.add(
                f"real agents, {_size(entry):,} runtimes: control-plane CPU-seconds per update "
                "per 1,000 agents",
                "reported (no limit)",
                f"{PROCESS_CPU} over the updates, their status reports and the pauses between them",
                f"{cpu:.3f} CPU-s",
                None,
            )


def update_cpu_per_1000(entry: dict[str, Any]) -> float | None:
    """Control-plane CPU-seconds per update per 1,000 real agents (None below 1,000 agents or on error)."""
    size = _size(entry)
    if size < 1000 or "error" in entry or "error" in entry["rrm"]:
        return None
    server = entry["rrm"]["server"]
    updates = (entry["rrm"]["latency"]["count"] + entry["rrm"]["lost"]) / size
    return float(server["cpu_cores"] * server["seconds"] / max(1.0, updates) / (size / 1000))


def _replicas_targets(rows: _Rows, entries: list[dict[str, Any]], rounds: int | None) -> None:
    wanted = f"B p99 ≤ {REPLICA_RATIO_LIMIT:g} x A p99 (or A + {REPLICA_SLACK_SECONDS:g} s), nothing lost"
    clock = FROM_ANSWER.replace("the write's answer", "replica A's answer")
    if not entries:
        rows.missing("a change through replica A wakes long-polls on replica B", wanted, clock, "not run")
    for r in entries:
        target = f"a change through replica A wakes long-polls on replica B, {_size(r):,} runtimes"
        why = _unmet(r, "replicas", _size(r), rounds)
        if why:
            rows.missing(target, wanted, clock, why)
            continue
        a_p99, b_p99 = r["on_a"]["latency"]["p99"], r["on_b"]["latency"]["p99"]
        ratio = r["ratio_b_to_a"]["p99"]
        rows.add(
            target,
            wanted,
            clock,
            f"B {_s(b_p99)} s, A {_s(a_p99)} s ({ratio if ratio is not None else '-'} x), "
            f"{r['all']['lost']} lost",
            a_p99 is not None
            and b_p99 is not None
            and b_p99 <= max(REPLICA_RATIO_LIMIT * a_p99, a_p99 + REPLICA_SLACK_SECONDS),
        )


def _footprint_targets(rows: _Rows, entries: list[dict[str, Any]], rounds: int | None) -> None:
    target, wanted = "control plane idle, 10,000 agents", "≤ 0.1 core, ≤ 300 MB RSS"
    entry = _measured(rows, entries, "footprint", 10000, rounds, (target, wanted, IDLE_CLOCK))
    if entry is not None:
        server = entry["server"]
        rows.add(
            target,
            wanted,
            IDLE_CLOCK,
            f"{server['cpu_cores']:.3f} core, {server['rss_mb_max']:.0f} MB",
            server["cpu_cores"] <= 0.1 and server["rss_mb_max"] <= 300,
        )
    target, wanted = "one agent, idle", "≤ 50 MB RSS, ≤ 0.5 % of a core"
    one = next((e["one_agent"] for e in entries if "error" not in e and e.get("one_agent")), None)
    if one is None:
        rows.missing(target, wanted, ONE_AGENT_CLOCK, "no footprint run with the one real agent")
        return
    rows.add(
        target,
        wanted,
        ONE_AGENT_CLOCK,
        f"{one['rss_mb_max']:.1f} MB, {one['cpu_percent_of_core']:.3f} %",
        one["rss_mb_max"] <= 50 and one["cpu_percent_of_core"] <= 0.5,
    )


def _throughput_targets(rows: _Rows, entries: list[dict[str, Any]], rounds: int | None) -> None:
    target, wanted = "component writes, one per request", "≥ 500 per second"
    coalesce = "a burst coalesces, every agent on the final revision"
    coalesce_wanted = "≤ 1 state per agent per delivery window, all final"
    t = entries[0] if entries else None
    if t is None or "error" in t:
        why = "not run" if t is None else f"incomplete: {t['error'][:160]}"
        rows.missing(target, wanted, WRITES_CLOCK, why)
        rows.missing(coalesce, coalesce_wanted, BURST_CLOCK, why)
        return
    batched = t.get("batched", {}).get("writes_per_second")
    rows.add(
        f"{target}, {t['runtimes']:,} runtimes",
        wanted,
        WRITES_CLOCK,
        f"{t['writes_per_second']:.0f} per second"
        + (f"; {batched:.0f} per second in applies of 10" if batched is not None else ""),
        t["writes_per_second"] >= 500,
    )
    b = t["burst"]
    per_window = b.get("taken_per_window_max", b.get("states_per_window_max"))  # older files: receipts
    rows.add(
        coalesce,
        coalesce_wanted,
        BURST_CLOCK if "taken_per_window_max" in b else RECEIPT_CLOCK,
        f"≤ {per_window} per {b['window_seconds']:g} s window, "
        f"{b['agents_on_final_revision']:,}/{b['agents']:,} final",
        per_window <= 1 and b["agents_on_final_revision"] == b["agents"],
    )


def _storm_targets(rows: _Rows, entries: list[dict[str, Any]], rounds: int | None) -> None:
    target, wanted = "reconnect storm, 10,000 agents", "all Synced within 60 s, nothing lost"
    s = _measured(rows, entries, "storm", 10000, rounds, (target, wanted, STORM_CLOCK))
    if s is None:
        return
    seconds = s["synced_seconds_after_restart"]
    rows.add(
        target,
        wanted,
        STORM_CLOCK,
        f"{_s(seconds)} s, {s['lost']} lost" if s["all_synced"] else f"not all Synced, {s['lost']} lost",
        bool(s["all_synced"]) and seconds is not None and seconds <= 60,
    )


def _ready_targets(rows: _Rows, entries: list[dict[str, Any]], rounds: int | None) -> None:
    target = "write → Ready in the control plane, real agents beside the daprd stand-in"
    wanted = "p99 ≤ 1.5 s, every runtime Ready"
    r = entries[0] if entries else None
    why = "not run" if r is None else _unmet(r, "ready", _size(r), rounds)
    if why or r is None:
        rows.missing(target, wanted, READY_CLOCK, why)
        return
    p99 = r["latency"]["p99"]
    rows.add(
        f"{target}, {r['size']} agents",
        wanted,
        READY_CLOCK,
        f"p99 {_s(p99)} s over {r['rounds']} updates",
        p99 is not None and p99 <= 1.5,
    )


def _provisioning_targets(rows: _Rows, entries: list[dict[str, Any]], rounds: int | None) -> None:
    what = "1,000 gardener-aws environments for 200 tenants at once"
    checks = [
        (f"{what}: outcome", "all succeeded, exactly one Shoot each, one account per tenant", OUTCOME),
        (f"{what}: control plane CPU per operation", "≤ 50 ms", PROVISIONING_CPU),
        (f"{what}: until the last succeeded", "≤ 60 s", PROVISIONING_TIME),
        ("local environments at once", "all Connected within 30 s", LOCAL_CLOCK),
    ]
    r = entries[0] if entries else None
    if r is None or "error" in r or r["size"] < 1000:
        why = "not run" if r is None else r.get("error", f"{r['size']:,} environments, not 1,000")[:160]
        for target, wanted, clock in checks:
            rows.missing(target, wanted, clock, why)
        return
    g, local = r["gardener"], r["local"]
    unfinished = "" if g["finished"] else f"did not finish: {g['operations']} when given up; "
    measured = [
        f"{unfinished}{g['operations'].get('succeeded', 0):,} succeeded, {g['shoots']:,} Shoots "
        f"({g['shoots_created']:,} created), {g['tenants_with_bindings']} tenants with an account",
        f"{unfinished}{g['cpu_ms_per_operation']:.1f} ms",
        f"{unfinished}{_s(g['seconds_until_last_succeeded'])} s",
        local["error"][:160]
        if "error" in local
        else f"{local['connected']}/{local['size']} Connected"
        + (f" after {local['seconds_until_all_connected']:.1f} s" if local["all_connected"] else ""),
    ]
    last = g["seconds_until_last_succeeded"]
    met = [
        g["finished"]
        and g["all_succeeded"]
        and g["one_shoot_each"]
        and g["shoots_created"] == r["size"]
        and g["one_account_per_tenant"],
        g["finished"] and g["cpu_ms_per_operation"] <= 50,
        last is not None and last <= 60,
        "error" not in local and bool(local["all_connected"]) and local["seconds_until_all_connected"] <= 30,
    ]
    for (target, wanted, clock), text, ok in zip(checks, measured, met, strict=True):
        rows.add(target, wanted, clock, text, ok)


# --- the control plane apart from its load generator: minimal clients, the status path, one real agent ---

MINIMAL_CLOCK = (
    "from the write request sent to the state parsed by the client, time.monotonic(); etcd watchers in the "
    "same run on the same client stack"
)
MINIMAL_CPU = (
    "the rrm server's CPU time with its worker processes per update (from just before the write to every "
    "client served, plus 1 s), / (N / 1,000)"
)
LOAD_GENERATOR_CPU = "the load-generator processes' CPU time (utime + stime) per client and update"
STATUS_CPU = "the rrm server's CPU time with its worker processes (utime + stime) over the phase, per report"
MINIMAL_MODES = ("rrm_watch", "rrm_status", "etcd")
AGENT_CPU_CLOCK = (
    "the agent process's CPU time (utime + stime, /proc/<pid>/stat) over the updates, less its idle rate, / "
    "updates (each until Ready)"
)


def _minimal(runs: list[dict[str, Any]]) -> str:
    def p(mode: dict[str, Any], q: str) -> str:
        return _s(mode["latency"][q]) if mode.get("latency") else mode.get("status", "-")

    def ratio(r: dict[str, Any], mode: str) -> str:
        value = (r.get("ratio") or {}).get(mode, {}).get("p99")
        return "-" if value is None else f"{value:.2f}"

    def cpu(mode: dict[str, Any], key: str, scale: float = 1.0, digits: int = 3) -> str:
        value = mode.get(key)
        return "-" if value is None else f"{value * scale:.{digits}f}"

    rows = []
    for r in runs:
        modes = {m: r.get(m, {}) for m in MINIMAL_MODES}
        rows.append(
            [f"{r['size']:,}", r.get("transport", "-")]
            + [f"{p(modes[m], 'p50')} / {p(modes[m], 'p99')}" for m in MINIMAL_MODES]
            + [ratio(r, "rrm_watch"), ratio(r, "rrm_status")]
            + [cpu(modes[m], "server_cpu_seconds_per_update_per_1000") for m in MINIMAL_MODES]
            + [cpu(modes[m], "load_generator_cpu_seconds_per_client_update", 1e3, 2) for m in MINIMAL_MODES]
            + [" / ".join(str(modes[m].get("lost", "-")) for m in MINIMAL_MODES)]
        )
    header = ["N", "rrm transport", "rrm, no reports p50 / p99 s", "rrm with reports p50 / p99 s"]
    header += ["etcd p50 / p99 s", "p99 / etcd (no reports)", "p99 / etcd (reports)"]
    header += [f"server CPU-s per update per 1,000 ({m})" for m in MINIMAL_MODES]
    header += [f"client CPU ms per client update ({m})" for m in MINIMAL_MODES]
    return (
        "#### Minimal-protocol clients against etcd watchers, same run, from the write request sent\n\n"
        + _table([*header, "lost (rrm / with reports / etcd)"], rows)
    )


STATUS_PHASES = ("first", "floor", "heartbeat", "changed", "bare")


def _status_path(runs: list[dict[str, Any]]) -> str:
    rows = []
    for r in runs:
        for phase in STATUS_PHASES:
            ph = r.get(phase)
            if ph is None:  # `bare` is measured since this session's runs
                continue
            rows.append(
                [
                    f"{r['runtimes']:,}",
                    r.get("database", "-"),
                    phase,
                    f"{ph['reports']:,}",
                    f"{ph['reports_per_second']:.0f}",
                    _s(ph["latency"]["p99"]),
                    "-" if ph["cpu_us_per_report"] is None else f"{ph['cpu_us_per_report']:.0f}",
                    "-" if ph["cpu_us_per_report_net"] is None else f"{ph['cpu_us_per_report_net']:.0f}",
                    ", ".join(f"{k} {v}" for k, v in sorted(ph["failures"].items())) or "0",
                ]
            )
    header = ["runtimes", "database", "phase", "reports", "reports/s", "answer p99 s"]
    header += ["server CPU µs per report", "net of idle µs", "failures"]
    return (
        "#### Status path: control-plane CPU per status report (floor: refused bodies, HTTP and token check "
        "only; heartbeat: unchanged hash; changed: a newly applied hash each; bare: uvicorn with the control "
        "plane's settings and an app that only answers 204, the stack's own cost per request)\n\n"
        + _table(header, rows)
    )


def _agent_cpu(r: dict[str, Any]) -> str:
    rows = [
        [
            mode,
            f"{d['updates']} of {r['updates']}",
            "-" if d["cpu_ms_per_update"] is None else f"{d['cpu_ms_per_update']:.3f}",
            "-" if d["cpu_ms_per_update_with_idle"] is None else f"{d['cpu_ms_per_update_with_idle']:.3f}",
            f"{d['idle_cpu_ms_per_second']:.3f}",
            d["incomplete"] or "-",
        ]
        for mode, d in r["deliveries"].items()
    ]
    header = ["delivery", "updates", "agent CPU ms per update (idle subtracted)", "with idle"]
    header += ["idle CPU ms per s", "incomplete"]
    return (
        f"#### One real `rrm agent`: its own CPU per update ({r['components']} components, one rewritten per "
        "update, each until Ready)\n\n" + _table(header, rows)
    )


def _minimal_problem(entry: dict[str, Any], rounds: int | None) -> str:
    reasons = []
    for mode in MINIMAL_MODES:
        m = entry.get(mode)
        if m is None:
            reasons.append(f"{mode}: not run")
        elif m.get("status") != "ok":
            reasons.append(f"{mode}: {m.get('status')}: {m.get('reason', '')}".rstrip(": "))
        elif m.get("lost"):
            reasons.append(f"{mode}: {m['lost']:,} lost")
        elif rounds and len(m.get("rounds", [])) < rounds:
            reasons.append(f"{mode}: {len(m.get('rounds', []))} of {rounds} updates")
    return "; ".join(reasons)


def _status_path_problem(entry: dict[str, Any], rounds: int | None) -> str:
    n = entry["runtimes"]
    expected = {"first": n, "changed": n}
    reasons = []
    for phase in STATUS_PHASES:
        ph = entry.get(phase)
        if ph is None:
            continue
        if ph["failures"]:
            reasons.append(f"{phase}: {sum(ph['failures'].values()):,} failed")
        if ph["reports"] < expected.get(phase, 1):
            reasons.append(f"{phase}: {ph['reports']:,} reports answered")
    if entry["synced_after"] < n:
        reasons.append(f"{entry['synced_after']:,} of {n:,} Synced at the end")
    return "; ".join(reasons)


def _agent_cpu_problem(entry: dict[str, Any], rounds: int | None) -> str:
    reasons = []
    for mode, d in entry["deliveries"].items():
        if d["incomplete"]:
            reasons.append(f"{mode}: {d['incomplete']}")
        elif d["updates"] < entry["updates"]:
            reasons.append(f"{mode}: {d['updates']} of {entry['updates']} updates")
    return "; ".join(reasons)


def _minimal_targets(rows: _Rows, entries: list[dict[str, Any]], rounds: int | None) -> None:
    for size in (1000, 10000):
        what = f"minimal-protocol clients, {size:,} runtimes"
        checks = [
            (
                f"{what}: propagation p99, status reports included",
                "≤ 1.0 x etcd p99, same run",
                MINIMAL_CLOCK,
            ),
            (
                f"{what}: no dearer than the etcd watchers' clients",
                "client CPU per update (with status reports) ≤ the etcd watchers'",
                LOAD_GENERATOR_CPU,
            ),
            (
                f"{what}: control-plane CPU-seconds per update per 1,000 agents",
                "reported (no limit)",
                MINIMAL_CPU,
            ),
        ]
        entry = _at(entries, size)
        why = _unmet(entry, "minimal", size, rounds)
        if why or entry is None:
            for target, wanted, clock in checks:
                rows.missing(target, wanted, clock, why)
            continue
        rrm, etcd = entry["rrm_status"]["latency"]["p99"], entry["etcd"]["latency"]["p99"]
        ratio = entry["ratio"]["rrm_status"]["p99"]
        clients = {
            m: entry[m]["load_generator_cpu_seconds_per_client_update"] for m in ("rrm_status", "etcd")
        }
        cpu = {m: entry[m]["server_cpu_seconds_per_update_per_1000"] for m in ("rrm_watch", "rrm_status")}
        measured = [
            f"rrm {_s(rrm)} s, etcd {_s(etcd)} s: {'-' if ratio is None else f'{ratio:.2f}'} x",
            f"{clients['rrm_status'] * 1e3:.3f} ms against {clients['etcd'] * 1e3:.3f} ms",
            f"{cpu['rrm_status']:.3f} CPU-s with status reports, {cpu['rrm_watch']:.3f} without",
        ]
        met = [ratio is not None and ratio <= 1.0, clients["rrm_status"] <= clients["etcd"], None]
        for (target, wanted, clock), text, ok in zip(checks, measured, met, strict=True):
            rows.add(target, wanted, clock, text, ok)


def _status_path_targets(rows: _Rows, entries: list[dict[str, Any]], rounds: int | None) -> None:
    target, wanted = "control-plane CPU per status report, 10,000 runtimes (unchanged hash)", "≤ 50 µs"
    entry = _measured(rows, entries, "status_path", 10000, rounds, (target, wanted, STATUS_CPU))
    if entry is not None:
        cpu = entry["heartbeat"]["cpu_us_per_report"]
        rows.add(target, wanted, STATUS_CPU, f"{cpu:.0f} µs", cpu <= 50)
    for entry in entries:
        if _unmet(entry, "status_path", _size(entry), rounds):
            continue
        for phase in ("heartbeat", "changed", "floor", "bare"):
            if phase not in entry:
                continue
            cpu = entry[phase]["cpu_us_per_report"]
            what = (
                "control-plane CPU per status report"
                if phase != "bare"
                else "the HTTP stack's CPU per request"
            )
            rows.add(
                f"{what}, {_size(entry):,} runtimes ({phase})",
                "reported (no limit)",
                STATUS_CPU,
                f"{cpu:.0f} µs",
                None,
            )


def _agent_cpu_targets(rows: _Rows, entries: list[dict[str, Any]], rounds: int | None) -> None:
    wanted = "≤ 1 ms"
    entry = entries[0] if entries else None
    if entry is None or "error" in entry:
        why = "not run" if entry is None else f"incomplete: {entry['error'][:160]}"
        rows.missing("the real agent's own CPU per update, one `rrm agent`", wanted, AGENT_CPU_CLOCK, why)
        return
    for mode, d in entry["deliveries"].items():
        target = f"the real agent's own CPU per update, one `rrm agent` ({mode})"
        why = d["incomplete"] or (
            f"{d['updates']} of {entry['updates']} updates" if d["updates"] < entry["updates"] else ""
        )
        if why or d["cpu_ms_per_update"] is None:
            rows.missing(target, wanted, AGENT_CPU_CLOCK, f"incomplete: {why or 'no figure'}")
            continue
        rows.add(
            target, wanted, AGENT_CPU_CLOCK, f"{d['cpu_ms_per_update']:.3f} ms", d["cpu_ms_per_update"] <= 1.0
        )


TARGETS: dict[str, Callable[[_Rows, list[dict[str, Any]], int | None], None]] = {
    "propagation": _propagation_targets,
    "minimal": _minimal_targets,
    "status_path": _status_path_targets,
    "agent_cpu": _agent_cpu_targets,
    "replicas": _replicas_targets,
    "footprint": _footprint_targets,
    "throughput": _throughput_targets,
    "storm": _storm_targets,
    "ready": _ready_targets,
    "provisioning": _provisioning_targets,
}


SECTIONS: dict[str, Callable[[Any], str]] = {
    "propagation": _propagation,
    "minimal": _minimal,
    "status_path": _status_path,
    "agent_cpu": _agent_cpu,
    "replicas": _replicas,
    "footprint": _footprint,
    "throughput": _throughput,
    "storm": _storm,
    "ready": _ready,
    "provisioning": _provisioning,
}


PROBLEMS: dict[str, Callable[[dict[str, Any], int | None], str]] = {
    "propagation": _propagation_problem,
    "minimal": _minimal_problem,
    "status_path": _status_path_problem,
    "agent_cpu": _agent_cpu_problem,
    "replicas": _replicas_problem,
    "footprint": _footprint_problem,
    "throughput": _throughput_problem,
    "storm": _storm_problem,
    "ready": _ready_problem,
    "provisioning": _provisioning_problem,
}
