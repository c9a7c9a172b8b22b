"""`python -m bench`: the command line, the presets' overrides, and the baseline processes'
entry point."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

import bench
from bench.config import DEFAULT_DATABASE_URL, PRESETS, BenchError, Config, note


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # optional; the worker runs on it when installed
    except ImportError:
        return None
    return uvloop.new_event_loop


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="standard")
    parser.add_argument("--jobs", type=int, help="jobs to run (standard 400)")
    parser.add_argument("--concurrency", type=int, help="WORKER_CONCURRENCY (standard 200)")
    parser.add_argument("--tokens", type=int, help="chunks per answer (standard 200)")
    parser.add_argument("--tps", type=float, help="chunks per second per stream (standard 20)")
    parser.add_argument("--ttft", type=float, help="seconds to the first chunk (standard 0.2)")
    parser.add_argument("--flush-interval", type=float, help="WORKER_FLUSH_INTERVAL_S (0.4)")
    parser.add_argument("--content-refresh", type=float, help="WORKER_CONTENT_REFRESH_S (1)")
    parser.add_argument("--workers", type=int, choices=(1, 2), help="worker processes (1)")
    parser.add_argument("--label", help="names the result file (default: the preset)")
    parser.add_argument("--skip-baselines", action="store_true", default=None)
    parser.add_argument("--database-url", help=f"an admin DSN (default {DEFAULT_DATABASE_URL})")
    parser.add_argument("--sim-processes", type=int, help="simulator processes (1)")
    parser.add_argument("--max-waiting", type=int, help="messages kept waiting in the queue")
    parser.add_argument("--timeout", type=float, help="seconds before giving up on the jobs")
    parser.add_argument(
        "--worker-cpu-quota",
        type=float,
        help="cap each worker at this share of a core (cgroup v1, root); for --workers 2 scaling",
    )
    parser.add_argument(
        "--provider",
        choices=("openai", "azure", "gemini", "bedrock"),
        help="the wire format of the simulator, the worker's reader and the baselines (openai)",
    )
    parser.add_argument(
        "--routing",
        action="store_true",
        default=None,
        help="the model as two deployments and a fallback (the Router picks every call)",
    )
    parser.add_argument(
        "--rich",
        action="store_true",
        default=None,
        help="answers that think first and end in two parallel tool calls",
    )
    # Internal: one baseline in this process (the harness starts these).
    parser.add_argument("--baseline", choices=("litellm", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--api-base", help=argparse.SUPPRESS)
    return parser


def config_from(args: argparse.Namespace) -> Config:
    overrides = {
        name: value
        for name, value in {
            "jobs": args.jobs,
            "concurrency": args.concurrency,
            "tokens": args.tokens,
            "tps": args.tps,
            "ttft_s": args.ttft,
            "flush_interval_s": args.flush_interval,
            "content_refresh_s": args.content_refresh,
            "workers": args.workers,
            "label": args.label,
            "skip_baselines": args.skip_baselines,
            "database_url": args.database_url,
            "sim_processes": args.sim_processes,
            "max_waiting": args.max_waiting,
            "timeout_s": args.timeout,
            "worker_cpu_quota": args.worker_cpu_quota,
            "provider": args.provider,
            "routing": args.routing,
            "rich": args.rich,
        }.items()
        if value is not None
    }
    cfg = replace(PRESETS[args.preset], **overrides)
    if args.label is None and (cfg.provider != "openai" or cfg.routing or cfg.rich):
        # Each provider's (and the routing, the rich) run gets a result file of its own.
        suffix = ("-routing" if cfg.routing else "") + ("-rich" if cfg.rich else "")
        cfg = replace(cfg, label=f"{cfg.label}-{cfg.provider}{suffix}")
    if min(cfg.jobs, cfg.concurrency, cfg.tokens, cfg.sim_processes) < 1 or cfg.tps <= 0:
        raise SystemExit("jobs, concurrency, tokens, sim-processes and tps must be positive")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.baseline:
        if not args.api_base:
            raise SystemExit("--baseline needs --api-base")
        args.concurrency = args.concurrency or PRESETS["standard"].concurrency
        args.tokens = args.tokens or PRESETS["standard"].tokens
        args.tps = args.tps or PRESETS["standard"].tps
        args.ttft = PRESETS["standard"].ttft_s if args.ttft is None else args.ttft
        args.timeout = args.timeout or 600.0
        args.provider = args.provider or "openai"
        args.rich = bool(args.rich)
        # Only the baseline's own module: the process holds what it measures.
        from bench.baselines import run_baseline

        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            print(json.dumps(runner.run(run_baseline(args))), flush=True)
        return 0
    cfg = config_from(args)
    from bench.harness import run_benchmark
    from bench.report import write_results

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            results = runner.run(run_benchmark(cfg))
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    path = write_results(results, label=cfg.label)
    print(json.dumps(results, indent=2))
    note(f"written to {path}")
    return 0
