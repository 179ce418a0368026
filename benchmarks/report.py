"""Writes ``docs/benchmarks.md`` and its PNG plots from the scenarios' rows.

Every figure is a median over runs, with min and max.  Within a scenario, rows of the same case
and metric are compared: each KafkaBroker figure is divided by every baseline's.  The targets of
the issue are checked at the top; the analysis of what limits each missed one is the hand-written
``benchmarks/analysis.md``, included as it is.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import re
import shutil
import statistics
import subprocess
from importlib import metadata
from pathlib import Path

from . import SCENARIOS
from .rows import ratio

#: Hand-written notes on the results, included at the end of the report.
ANALYSIS = Path(__file__).with_name("analysis.md")


# The machine --------------------------------------------------------------------------------


def _version(command: list[str], pattern: str = r"(\d+(?:\.\d+)+)") -> str:
    if not shutil.which(command[0]) and not os.path.exists(command[0]):
        return "not installed"
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "?"
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else "?"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(services_versions: bool = True) -> dict:
    """Returns what the figures were measured on."""
    cpu = "?"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    memory = "?"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    os_name = platform.platform()
    try:
        os_name = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    import confluent_kafka

    from broker.devkafka import KAFKA_VERSION

    redis_server = _version(["redis-server", "--version"], r"v=([0-9.]+)")
    info = {
        "CPU": f"{os.cpu_count()} cores, {cpu}",
        "Memory": memory,
        "OS": f"{os_name}, Linux {platform.release()}",
        "Load average (1, 5, 15 min) at the end": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "Python": platform.python_version(),
        "Apache Kafka": f"{KAFKA_VERSION} (single KRaft node on the same machine)",
        "Java": _version(["java", "-version"], r'version "([^"]+)"'),
        "confluent-kafka / librdkafka": f"{_package('confluent-kafka')} / {confluent_kafka.libversion()[0]}",
        "dramatiq": _package("dramatiq"),
        "celery / kombu": f"{_package('celery')} / {_package('kombu')}",
        "redis-server / redis-py": f"{redis_server} / {_package('redis')}",
        "rabbitmq-server / pika": f"{_deb_version('rabbitmq-server')} / {_package('pika')}",
        "wrk": _version(["wrk", "--version"], r"wrk ([^ ]+)"),
        "gunicorn / Flask / SQLAlchemy": f"{_package('gunicorn')} / {_package('flask')} / {_package('sqlalchemy')}",
    }
    return info


def _deb_version(name: str) -> str:
    if not shutil.which("dpkg-query"):
        return "?"
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True, text=True)
    return out.stdout.strip() or "not installed"


# Numbers ------------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:,.1f}"
    else:
        text = f"{value:,.2f}"
    return text


def is_subject(r: dict) -> bool:
    return "KafkaBroker" in r["system"]


def comparisons(rows: list[dict], subject: dict) -> str:
    """``0.95x StubBroker · 7.8x RedisBroker``: the subject's median over each baseline's."""
    parts = []
    for other in rows:
        if other is subject or is_subject(other) or other["status"] != "ok":
            continue
        if (other["scenario"], other["case"], other["metric"]) != (
            subject["scenario"],
            subject["case"],
            subject["metric"],
        ):
            continue
        value = ratio(subject, other)
        if value is not None:
            parts.append(f"{value:.2f}x {other['system']}")
    return " · ".join(parts)


def same_run_ratio(subject: dict, baseline: dict) -> float | None:
    """The median of per-run ratios, when both were measured in every run."""
    if subject["status"] != "ok" or baseline["status"] != "ok" or len(subject["runs"]) != len(baseline["runs"]):
        return ratio(subject, baseline)
    return statistics.median(a / b for a, b in zip(subject["runs"], baseline["runs"]) if b)


def find(rows: list[dict], scenario: str, case: str, system: str, metric: str) -> dict | None:
    for r in rows:
        if (
            (r["scenario"], r["metric"]) == (scenario, metric)
            and r["case"].startswith(case)
            and r["system"].startswith(system)
        ):
            return r
    return None


# Targets ------------------------------------------------------------------------------------


def targets(rows: list[dict]) -> list[tuple[str, str, str]]:
    """Returns ``(target, measured, verdict)`` for each target of the issue that was measured."""
    result = []

    def check(name, value, ok, text):
        if value is None:
            result.append((name, "not measured", "–"))
        else:
            result.append((name, text, "met" if ok else "**missed**"))

    for threads in ("8 threads", "1 thread"):
        kafka = find(rows, "worker_throughput", threads, "KafkaBroker", "throughput")
        stub = find(rows, "worker_throughput", threads, "StubBroker", "throughput")
        redis = find(rows, "worker_throughput", threads, "RedisBroker", "throughput")
        celery = find(rows, "worker_throughput", threads, "Celery 5 on Kafka (polling", "throughput")
        ok = kafka and kafka["status"] == "ok"
        check(
            f"No-op worker throughput, {threads} ≥ 5,000 tasks/s",
            ok and kafka["median"],
            ok and kafka["median"] >= 5000,
            ok and f"{kafka['median']:,.0f} tasks/s",
        )
        reporting = find(rows, "worker_throughput", threads, "KafkaBroker with ops reports", "throughput")
        cost = same_run_ratio(reporting, kafka) if ok and reporting and reporting["status"] == "ok" else None
        check(
            f"… {threads}, with ops reports ≥ 98% of without (reporting costs ≤ 2%)",
            cost,
            cost is not None and cost >= 0.98,
            f"{cost:.1%}" if cost is not None else "",
        )
        for label, baseline, bound in (
            ("of StubBroker in the same run ≥ 60%", stub, 0.6),
            ("vs Dramatiq on Redis ≥ 1.0x", redis, 1.0),
            ("vs Celery on Kafka ≥ 3x", celery, 3.0),
        ):
            value = same_run_ratio(kafka, baseline) if ok and baseline and baseline["status"] == "ok" else None
            text = (f"{value:.0%}" if bound < 1 else f"{value:.1f}x") if value is not None else ""
            check(f"… {threads}, {label}", value, value is not None and value >= bound, text)
    for metric, bound in (("p50", 5), ("p99", 20)):
        r = find(rows, "request_response", "sequential", "KafkaBroker", metric)
        ok = r and r["status"] == "ok"
        check(
            f"get_user round trip, sequential, {metric} ≤ {bound} ms",
            ok and r["median"],
            ok and r["median"] <= bound,
            ok and f"{r['median']:.1f} ms",
        )
    r = find(rows, "http_signup", "", "gateway on KafkaBroker", "throughput")
    ok = r and r["status"] == "ok"
    check(
        "HTTP sign-up ≥ 1,500 requests/s",
        ok and r["median"],
        ok and r["median"] >= 1500,
        ok and f"{r['median']:,.0f} requests/s",
    )
    r = find(rows, "http_signup", "", "gateway on KafkaBroker", "p99")
    ok = r and r["status"] == "ok"
    check("HTTP sign-up p99 ≤ 50 ms", ok and r["median"], ok and r["median"] <= 50, ok and f"{r['median']:.0f} ms")
    r = find(rows, "latency", "first message of a new queue", "KafkaBroker", "send to start")
    ok = r and r["status"] == "ok"
    check(
        "First message of a new queue, send to start ≤ 300 ms",
        ok and r["median"],
        ok and r["median"] <= 300,
        ok and f"{r['median']:.0f} ms",
    )
    r = find(rows, "delays", "", "KafkaBroker", "lateness p99")
    ok = r and r["status"] == "ok"
    check("Delay lateness p99 ≤ 1 s", ok and r["median"], ok and r["median"] <= 1000, ok and f"{r['median']:,.0f} ms")
    r = find(rows, "delays", "", "KafkaBroker", "RSS growth")
    ok = r and r["status"] == "ok"
    check(
        "Delays: flat memory (RSS growth ≤ 5 MiB with 100,000 pending)",
        ok and r["median"] is not None,
        ok and r["median"] <= 5,
        ok and f"{r['median']:+.1f} MiB",
    )
    r = find(rows, "enqueue", "bulk", "KafkaBroker", "throughput")
    ok = r and r["status"] == "ok"
    check(
        "enqueue_many ≥ 100,000 messages/s",
        ok and r["median"],
        ok and r["median"] >= 100_000,
        ok and f"{r['median']:,.0f} messages/s",
    )
    system = {(r["case"], r["metric"]): r for r in rows if r["scenario"] == "system" and r["status"] == "ok"}
    for case, bound in (("SQLite, sign-ups", 1000), ("SQLite, sign-ups and payments, 50/50", 600)):
        for database in ("SQLite", "PostgreSQL"):
            r = system.get((case.replace("SQLite", database), "sustained"))
            check(
                f"The system, {case.split(', ', 1)[1]}, sustained end to end, {database} ≥ {bound:,}/s"
                + ("" if database == "SQLite" else " (reported)"),
                r and r["median"],
                r and r["median"] >= bound,
                r and f"{r['median']:,.0f} tasks/s",
            )
    for database in ("SQLite", "PostgreSQL"):
        sign_up = system.get((f"{database}, sign-ups", "CPU per task"))
        mixed = system.get((f"{database}, sign-ups and payments, 50/50", "CPU per task"))
        check(
            f"CPU per sign-up, all processes, {database} ≤ 1.0 ms",
            sign_up and sign_up["median"],
            sign_up and sign_up["median"] <= 1.0,
            sign_up and f"{sign_up['median']:.2f} ms",
        )
        payment = 2 * mixed["median"] - sign_up["median"] if sign_up and mixed else None
        check(
            f"CPU per payment, all processes, {database} ≤ 1.8 ms",
            payment,
            payment is not None and payment <= 1.8,
            f"{payment:.2f} ms" if payment is not None else "",
        )
        r = system.get((f"{database}, sign-ups and payments, 50/50", "payment message to row p50"))
        check(
            f"A payment's message to its row, get_user included, p50, {database} ≤ 4 ms",
            r and r["median"],
            r and r["median"] <= 4,
            r and f"{r['median']:.1f} ms",
        )
    scaling = {(r["case"], r["metric"]): r for r in rows if r["scenario"] == "scaling" and r["status"] == "ok"}
    classic, shared = (
        scaling.get(("1 partition", "2 processes")),
        scaling.get(("1 partition, share group", "2 processes")),
    )
    value = same_run_ratio(shared, classic) if classic and shared else None
    check(
        "1-partition queue, 2 processes: a share group beyond a classic group (the second process works)",
        value,
        value is not None and value > 1,
        f"{value:.2f}x" if value is not None else "",
    )
    return result


# Plots --------------------------------------------------------------------------------------


def plots(rows: list[dict], folder: Path) -> dict[str, str]:
    """Draws the PNGs; returns ``{scenario: markdown image line}``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    images: dict[str, str] = {}

    def save(fig, name, scenario, alt):
        path = folder / f"benchmarks-{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        images[scenario] = images.get(scenario, "") + f"![{alt}]({path.name})\n"

    scaling = [r for r in rows if r["scenario"] == "scaling" and r["status"] == "ok"]
    if scaling:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for case in dict.fromkeys(r["case"] for r in scaling):
            points = sorted((int(r["metric"].split()[0]), r) for r in scaling if r["case"] == case)
            xs = [p for p, _ in points]
            ax.errorbar(
                xs,
                [r["median"] for _, r in points],
                yerr=[[r["median"] - r["min"] for _, r in points], [r["max"] - r["median"] for _, r in points]],
                marker="o",
                capsize=3,
                label=case,
            )
        ax.set_xlabel("worker processes (8 threads each)")
        ax.set_ylabel("tasks/s (median, min–max)")
        ax.set_xticks([1, 2, 4])
        ax.set_ylim(bottom=0)
        ax.set_title("No-op throughput against worker processes")
        ax.legend(title="queue topic, consumption")
        ax.grid(alpha=0.3)
        save(fig, "scaling", "scaling", "Throughput against worker processes, by partition count")

    for scenario, metric, title, xlabel in (
        ("latency", "p50", "End-to-end latency (enqueue to actor start)", "ms"),
        ("request_response", "p50", "get_user round trip", "ms"),
        ("delays", "lateness p50", "Lateness of delayed messages against their eta", "ms late"),
    ):
        with_samples = [r for r in rows if r["scenario"] == scenario and r["metric"] == metric and r.get("samples")]
        if not with_samples:
            continue
        cases = list(dict.fromkeys(r["case"] for r in with_samples))
        fig, axes = plt.subplots(1, len(cases), figsize=(5.2 * len(cases), 3.8), squeeze=False)
        for ax, case in zip(axes[0], cases):
            for r in (r for r in with_samples if r["case"] == case):
                values = sorted(v for v in r["samples"] if v > 0) or [0.001]
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax.plot(values, ys, label=r["system"])
            ax.set_xscale("log")
            ax.set_xlabel(f"{xlabel} (log scale)")
            ax.set_ylabel("fraction of messages")
            ax.set_title(case)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        fig.suptitle(f"{title}: distribution of the median run")
        save(fig, scenario, scenario, f"{title}, distribution")

    throughput = [r for r in rows if r["scenario"] == "worker_throughput" and r["status"] == "ok"]
    if throughput:
        cases = list(dict.fromkeys(r["case"] for r in throughput))
        systems = [s for s in dict.fromkeys(r["system"] for r in throughput) if "raw" not in s]
        fig, ax = plt.subplots(figsize=(7.5, 4))
        width = 0.8 / max(1, len(cases))
        for i, case in enumerate(cases):
            values = [
                next((r["median"] for r in throughput if r["case"] == case and r["system"] == s), 0) for s in systems
            ]
            ax.barh([y + i * width for y in range(len(systems))], values, height=width, label=case)
        ax.set_yticks([y + width * (len(cases) - 1) / 2 for y in range(len(systems))])
        ax.set_yticklabels(systems, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("tasks/s (median, log scale)")
        ax.set_title("No-op worker throughput, one worker process")
        ax.legend()
        ax.grid(alpha=0.3, axis="x", which="both")
        save(fig, "throughput", "worker_throughput", "No-op worker throughput by broker")
    return images


# The report ---------------------------------------------------------------------------------


def _docstring(name: str) -> tuple[str, str]:
    module = importlib.import_module(f"benchmarks.{name}")
    doc = (module.__doc__ or "").strip()
    first, _, rest = doc.partition("\n\n")
    return module.TITLE, rest.strip() or first


def _table(rows: list[dict]) -> list[str]:
    lines = [
        "| case | system | metric | median | min | max | KafkaBroker ÷ baseline | note |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['case']} | {r['system']} | {r['metric']} | – | – | – | | unavailable: {r['note']} |")
            continue
        unit = f" {r['unit']}" if r["unit"] else ""
        versus = comparisons(rows, r) if is_subject(r) else ""
        lines.append(
            f"| {r['case']} | {r['system']} | {r['metric']} ({r['unit']}) | {fmt(r['median'])} | "
            f"{fmt(r['min'])} | {fmt(r['max'])} | {versus} | {r['note']} |".replace(unit + ")", r["unit"] + ")")
        )
    return lines


def _scaling_table(rows: list[dict]) -> list[str]:
    processes = sorted({int(r["metric"].split()[0]) for r in rows if r["status"] == "ok"})
    lines = [
        "| topic | " + " | ".join(f"{p} process{'es' if p > 1 else ''}" for p in processes) + " |",
        "|---|" + "---:|" * len(processes),
    ]
    for case in dict.fromkeys(r["case"] for r in rows):
        cells = []
        for p in processes:
            r = next(
                (r for r in rows if r["case"] == case and r["metric"].startswith(f"{p} ") and r["status"] == "ok"), None
            )
            cells.append(f"{fmt(r['median'])} ({fmt(r['min'])}–{fmt(r['max'])})" if r else "–")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("tasks/s, median (min–max); 8 threads per process.")
    return lines


def _system_table(rows: list[dict]) -> list[str]:
    """Every rate each ladder offered, then the summary rows."""
    lines = [
        "| database, load | offered /s | accepted /s | processed /s | lag at end | lag after (s) | "
        "202 to succeeded p50 / p99 (ms) | CPU per task (ms): total (web, auth, payments, Kafka) | |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        for step in r.get("steps", []):
            cpu = step["cpu"]
            parts = ", ".join(f"{cpu[name]:.2f}" for name in ("web", "auth", "payments", "Kafka") if name in cpu)
            lines.append(
                f"| {r['case']} | {step['offered']:,} | {fmt(step['accepted'])} | {fmt(step['processed'])} | "
                f"{step['lag at end']:,} | {step['lag after']:,} ({step['settled in']:.1f}) | "
                f"{fmt(step['p50'])} / {fmt(step['p99'])} | {sum(cpu.values()):.2f} ({parts}) | "
                f"{'sustained' if step['sustained'] else '**not sustained**'} |"
            )
    lines += ["", "Summary, at the highest sustained rate of each ladder:", ""]
    return lines + _table(rows)


def _profile_tables(rows: list[dict]) -> list[str]:
    lines = []
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        lines.append(f"**{case}**" + (f" ({mine[0]['note']} of busy threads)" if mine[0]["status"] == "ok" else ""))
        lines.append("")
        if mine[0]["status"] != "ok":
            lines.append(f"unavailable: {mine[0]['note']}")
            lines.append("")
            continue
        own = [r for r in mine if r["metric"] == "self %"]
        total = [r for r in mine if r["metric"] == "total %"]
        lines.append("| CPU held by (innermost frame) [package] | share | | package anywhere on the stack | share |")
        lines.append("|---|---:|---|---|---:|")
        for i in range(max(len(own), len(total))):
            a = own[i] if i < len(own) else None
            b = total[i] if i < len(total) else None
            lines.append(
                f"| {a['system'] if a else ''} | {fmt(a['median']) + ' %' if a else ''} | | "
                f"{b['system'] if b else ''} | {fmt(b['median']) + ' %' if b else ''} |"
            )
        lines.append("")
    return lines


def write(results: dict, path: Path) -> None:
    """Writes the report (and its plots, next to it) from ``var/benchmarks.json``'s content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scenarios = results.get("scenarios", {})
    rows = [r for name in SCENARIOS for r in scenarios.get(name, {}).get("rows", [])]
    images = plots(rows, path.parent)
    finished = max((s.get("finished", 0) for s in scenarios.values()), default=0)
    when = dt.datetime.fromtimestamp(finished, dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if finished else "?"
    runs = sorted({s.get("runs", 0) for s in scenarios.values()})
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks`), which sets up what it needs, runs every scenario "
        "and rewrites this file and the PNG plots next to it; do not edit it by hand (the analysis at the end comes "
        "from `benchmarks/analysis.md`). The code of each scenario is `benchmarks/<scenario>.py`.",
        "",
        f"Measured {when}; every figure is the median of {', '.join(map(str, runs))} run(s), with min and max. "
        f"Throughputs are counted from the first task's start to the last one's, so start-up is excluded. "
        f"Ratios are KafkaBroker's median divided by each baseline's, in the same scenario, case and metric "
        f"(so above 1 is better for throughput, below 1 for latency and memory).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    if results.get("smoke"):
        out[7:7] = ["**Smoke run: figures of about a second each, meaningless as measurements.**", ""]
    for key, value in (results.get("machine") or {}).items():
        out.append(f"| {key} | {value} |")
    out += [
        "",
        "Kafka, Redis, RabbitMQ, the workers and the load generators all share the two cores. "
        "The machine is shared with other work, so the load average above shows how noisy the run was.",
        "",
    ]
    if results.get("warmup"):
        cpus = [f"{cpu:.2f} ms" for _, cpu in results["warmup"]["windows"] if cpu is not None]
        out += [
            f"Before the first scenario, Kafka was loaded for {results['warmup']['seconds']} s through KafkaBroker "
            "(confirmed sends from 8 threads to a worker process), so that no scenario measures its JVM's start-up "
            "(`benchmarks/warmup.py`)." + (f" Kafka's CPU per message, by window: {', '.join(cpus)}." if cpus else ""),
            "",
        ]
    out += [
        "## Targets",
        "",
        "| target (2-core machine, Kafka on the same box) | measured (median) | |",
        "|---|---|---|",
    ]
    out += [f"| {name} | {measured} | {verdict} |" for name, measured, verdict in targets(rows)]
    out.append("")
    for name in SCENARIOS:
        if name not in scenarios:
            continue
        title, description = _docstring(name)
        mine = [r for r in rows if r["scenario"] == name]
        out += [f"## {title}", "", description, ""]
        if name == "scaling":
            out += _scaling_table(mine)
        elif name == "profiles":
            out += _profile_tables(mine)
        elif name == "system":
            out += _system_table(mine)
        else:
            out += _table(mine)
        out.append("")
        if name in images:
            out += [images[name]]
        out.append(f"_{scenarios[name].get('seconds', 0):.0f} s._")
        out.append("")
    if ANALYSIS.exists():
        out += [ANALYSIS.read_text().strip(), ""]
    path.write_text("\n".join(out))
