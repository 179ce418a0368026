"""``python -m benchmarks [--smoke] [--runs N] [--only NAME ...]``: run the scenarios, write the report.

Kafka is a throwaway local broker (``broker.devkafka.LocalKafka``) unless
``KAFKA_BOOTSTRAP_SERVERS`` is set; Redis and RabbitMQ run as child processes on free ports.
Results go to ``var/benchmarks.json`` (merged with earlier ones when ``--only`` picks scenarios)
and the report to ``docs/benchmarks.md``, with its PNG plots next to it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import traceback

from . import SCENARIOS, warmup
from .context import ROOT, Context
from .rows import unavailable
from .services import Services

#: Where raw results are kept between runs (``var/`` is not committed).
RESULTS = ROOT / "var" / "benchmarks.json"

#: How long Kafka is loaded before the first scenario (s): its CPU per message levels off after ~60 s.
WARM_UP_SECONDS = 75

#: The generated report.
REPORT = ROOT / "docs" / "benchmarks.md"


def run_scenario(name: str, ctx: Context) -> list[dict]:
    """Runs one scenario; a scenario that crashes yields one row saying so."""
    module = importlib.import_module(f"benchmarks.{name}")
    try:
        return module.run(ctx)
    except Exception as e:
        traceback.print_exc()
        return [unavailable(name, "-", "-", f"the scenario failed: {type(e).__name__}: {e}")]


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        if r["status"] == "ok":
            print(
                f"  {r['case']:<28} {r['system']:<32} {r['metric']:<14} {r['median']:>12,.2f} {r['unit']}"
                f"  [{r['min']:,.2f} .. {r['max']:,.2f}]  {r['note']}",
                flush=True,
            )
        else:
            print(f"  {r['case']:<28} {r['system']:<32} unavailable: {r['note']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="run each scenario for about a second")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default: 3)")
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, metavar="NAME", help=f"run only these scenarios: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from var/benchmarks.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from . import report

    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.report_only:
        report.write(previous, REPORT)
        print(f"Wrote {REPORT.relative_to(ROOT)}")
        return 0
    names = args.only or list(SCENARIOS)
    started = time.monotonic()
    with Services() as services:
        print(
            f"Kafka at {services.urls['kafka']}; "
            + "; ".join(
                f"{name}: {services.urls.get(name) or services.errors.get(name)}"
                for name in ("redis", "rabbitmq", "postgres")
            ),
            flush=True,
        )
        ctx = Context(
            bootstrap_servers=services.urls["kafka"],
            workdir=services.workdir,
            runs=args.runs,
            smoke=args.smoke,
            urls=dict(services.urls),
            errors=dict(services.errors),
            kafka_pid=services.kafka.pid,
        )
        results = {"scenarios": dict(previous.get("scenarios", {})), "runs": args.runs, "smoke": args.smoke}
        if not args.smoke:
            print(f"\n== warming Kafka up ({WARM_UP_SECONDS} s)", flush=True)
            results["warmup"] = {"seconds": WARM_UP_SECONDS, "windows": warmup.run(ctx, WARM_UP_SECONDS)}
            print(
                "  messages, Kafka CPU per message (ms), per window: "
                + ", ".join(
                    f"{n:,} {cpu:.3f}" if cpu is not None else f"{n:,}" for n, cpu in results["warmup"]["windows"]
                ),
                flush=True,
            )
        for name in names:
            print(f"\n== {name}", flush=True)
            t0 = time.monotonic()
            ctx.delete_topics()
            rows = run_scenario(name, ctx)
            print_rows(rows)
            print(f"  ({time.monotonic() - t0:.0f} s)", flush=True)
            results["scenarios"][name] = {
                "rows": rows,
                "seconds": time.monotonic() - t0,
                "runs": ctx.run_count,
                "finished": time.time(),
            }
    results["machine"] = report.machine(services_versions=True)
    results["seconds"] = time.monotonic() - started
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results))
    report.write(results, REPORT)
    print(f"\nWrote {REPORT.relative_to(ROOT)} in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
