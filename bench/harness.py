"""The harness: starts PostgreSQL's throwaway database, moto, the simulator and the worker(s)
as processes pinned to cores, runs the worker phase and then the baselines beside them, and
tears everything down, Ctrl-C and SIGTERM included."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench import postgres, wal, workload
from bench.config import (
    AWS_ENV,
    HOST,
    REGION,
    RESULTS_DIR,
    BenchError,
    Config,
    note,
)
from bench.figures import worker_figures
from bench.parts import Parts, sample
from bench.processes import (
    READY_TIMEOUT_S,
    Child,
    Placement,
    child_env,
    free_port,
    http_ok,
    spawn,
    wait_for,
)
from bench.procfs import (
    affinity,
    core_busy_share,
    core_jiffies,
    cpu_quota,
    status_kib,
    tree_cpu_seconds,
)
from bench.providers import models_document
from bench.report import report
from bench.scrape import worker_metrics
from bench.sim import simulator_command, simulator_records, simulator_url
from bench.workerlog import WorkerLog, started
from bench.workload import PICKUP_PROBES, insert_jobs
from worker.queue import JobQueue


async def run_benchmark(cfg: Config) -> dict[str, Any]:
    """Set everything up, run the worker phase and the baselines, tear everything down."""
    # SIGTERM cleans up as Ctrl-C does (asyncio.Runner turns SIGINT into this cancellation).
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    os.environ.update(AWS_ENV)
    placement = Placement.for_run(cfg.workers, shared=cfg.worker_cpu_quota is not None)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = (RESULTS_DIR / "tmp" / f"{stamp}-{cfg.label}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    load_before = [round(x, 2) for x in os.getloadavg()]  # others' work skews CPU figures
    # The harness itself runs beside the simulator, never on a worker's core.
    os.sched_setaffinity(0, placement.others or os.sched_getaffinity(0))
    async with contextlib.AsyncExitStack() as stack:
        admin = await postgres.connect(cfg.database_url)
        stack.push_async_callback(admin.close)
        db_name = await postgres.create_bench_database(admin)
        stack.push_async_callback(postgres.drop_database, admin, db_name)
        dsn = postgres.database_in(cfg.database_url, db_name)
        note(f"database {db_name}; logs in {run_dir}")
        await migrate(dsn, run_dir)

        moto_port = free_port()
        moto_server = Path(sys.executable).with_name("moto_server")
        moto = spawn(
            "moto",
            [str(moto_server), "-H", HOST, "-p", str(moto_port)],
            logs_dir=run_dir,
            env=child_env(),
            cpus=placement.others,
        )
        stack.callback(moto.stop)
        sim = spawn(
            "simulator",
            simulator_command(processes=cfg.sim_processes),
            logs_dir=run_dir,
            env=child_env(),
            cpus=placement.others,
        )
        stack.callback(sim.stop)
        sqs_url = f"http://{HOST}:{moto_port}"
        await wait_for(
            lambda: http_ok(f"{sqs_url}/moto-api/"), what="moto", child=moto, timeout_s=30
        )
        sim_url = await simulator_url(sim)

        queue_url = await JobQueue.create(
            f"bench-{secrets.token_hex(4)}", region=REGION, endpoint_url=sqs_url
        )
        models_file = run_dir / "models.yaml"
        document = models_document(sim_url, cfg.provider, routing=cfg.routing)
        models_file.write_text(yaml.safe_dump(document), encoding="utf-8")
        parts = Parts(
            cfg, run_dir, placement, admin, db_name, dsn, sim, sim_url, moto, sqs_url,
            queue_url, models_file,
        )  # fmt: skip
        # The floor runs before the worker phase as well as after it: this machine's speed
        # drifts, and the ratio is taken to the two floors' mean (report.py says how far apart).
        floor_before = None if cfg.skip_baselines else await baseline_phase(parts, "floor")
        worker = await worker_phase(parts)
        import_litellm_s = await time_litellm_import(parts)
        baselines: dict[str, Any] = {}
        if floor_before is not None:
            for kind in ("litellm", "floor"):
                baselines[kind] = await baseline_phase(parts, kind)
            baselines["floor_before_worker"] = floor_before
        server_version = await postgres.server_version(admin)
    return report(
        cfg,
        placement=placement,
        worker=worker,
        baselines=baselines,
        import_litellm_s=import_litellm_s,
        server_version=server_version,
        duration_s=time.monotonic() - began,
        load_before=load_before,
    )


async def migrate(dsn: str, run_dir: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "migrate",
        env=child_env({"DATABASE_URL": dsn}), cwd=run_dir,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError("streaming-worker migrate did not finish within 120 s") from None
    if process.returncode != 0:
        raise BenchError(f"streaming-worker migrate failed:\n{output.decode(errors='replace')}")


async def worker_phase(parts: Parts) -> dict[str, Any]:
    """Run the worker(s) on every job, as the app submits them; return the figures."""
    cfg = parts.cfg
    job_ids = await insert_jobs(parts)
    env = child_env(
        {
            "DATABASE_URL": parts.dsn,
            "SQS_QUEUE_URL": parts.queue_url,
            "AWS_ENDPOINT_URL_SQS": parts.sqs_url,
            "WORKER_MODELS_FILE": str(parts.models_file),
            "WORKER_CONCURRENCY": str(cfg.concurrency),
            "WORKER_FLUSH_INTERVAL_S": f"{cfg.flush_interval_s:g}",
            "WORKER_CONTENT_REFRESH_S": f"{cfg.content_refresh_s:g}",
            "WORKER_LOG_FORMAT": "json",
            "WORKER_LOG_LEVEL": "info",
            # Every job has ended when the harness stops the workers: no grace is needed.
            "WORKER_SHUTDOWN_GRACE_S": "5",
        }
    )
    workers: list[Child] = []
    logs: list[WorkerLog] = []
    quotas = contextlib.ExitStack()
    metrics_ports: list[int] = []
    try:
        for index, cpus in enumerate(parts.placement.workers):
            metrics_ports.append(free_port())
            worker = spawn(
                f"worker-{index}",
                [sys.executable, "-m", "worker", "run"],
                logs_dir=parts.run_dir,
                env={**env, "WORKER_METRICS_PORT": str(metrics_ports[-1])},
                cpus=cpus,
            )
            workers.append(worker)
            logs.append(WorkerLog(worker.log_path))
        for worker, log in zip(workers, logs, strict=True):
            await wait_for(
                started(log), what="worker start", child=worker, timeout_s=READY_TIMEOUT_S
            )
            if cfg.worker_cpu_quota is not None:  # once started: the import is not measured
                quotas.enter_context(cpu_quota(worker.pid, cfg.worker_cpu_quota, name=worker.name))
        sent: dict[str, float] = {}
        async with JobQueue.open(parts.queue_url, region=REGION, endpoint_url=parts.sqs_url) as q:
            note(f"{len(workers)} worker(s) ready; {PICKUP_PROBES} pickup probes, one at a time")
            idle_pickups = await workload.idle_pickups(parts, q, logs)
            note(f"sending {cfg.jobs} jobs")
            rss_before = [status_kib(w.pid, "VmRSS") for w in workers]
            transactions_before = await postgres.transactions(parts.admin, parts.db_name)
            ready = await sample(parts, workers, database=True)
            run = await workload.feed_and_watch(
                parts, workers=workers, logs=logs, queue=q, job_ids=job_ids, sent=sent
            )
        peak = [status_kib(w.pid, "VmHWM") for w in workers]
        scraped = await worker_metrics(metrics_ports)
        note(
            "every job has ended; stopping the worker(s)"
            if run.finished
            else f"deadline of {cfg.deadline_s:g} s reached; stopping the worker(s)"
        )
        stop_began = time.monotonic()
        for worker in workers:
            worker.signal_stop()
        exit_codes = [await asyncio.to_thread(w.stop) for w in workers]
        stop_s = time.monotonic() - stop_began
    finally:
        for worker in workers:
            await asyncio.to_thread(worker.stop)
        quotas.close()
        for log in logs:
            log.close()
    # Exited backends have flushed their statistics; a moment for the last ones to land.
    await asyncio.sleep(0.5)
    transactions, others = (
        after - before
        for after, before in zip(
            await postgres.transactions(parts.admin, parts.db_name),
            transactions_before,
            strict=True,
        )
    )
    wal_bytes = await postgres.wal_bytes(parts.admin, ready.wal_lsn, run.done.wal_lsn)
    wal_profile = await wal.wal_profile(parts.admin, parts.dsn, ready.wal_lsn, run.done.wal_lsn)
    rows, deltas = await postgres.results(parts.dsn)
    records = await simulator_records(parts.sim_url, cfg, phase="job")
    return worker_figures(
        parts,
        job_ids=job_ids,
        run=run,
        ready=ready,
        logs=logs,
        workers=workers,
        rss_before=rss_before,
        peak=peak,
        sent=sent,
        transactions=transactions,
        other_transactions=others,
        wal_bytes=wal_bytes,
        wal_profile=wal_profile,
        idle_pickups=idle_pickups,
        scraped=scraped,
        rows=rows,
        deltas=deltas,
        records=records,
        exit_codes=exit_codes,
        stop_s=stop_s,
    )


async def time_litellm_import(parts: Parts) -> float:
    """`import litellm` alone, on the worker's core: most of the worker's start."""
    with affinity(parts.placement.workers[0]):
        began = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import litellm", env=child_env(), cwd=parts.run_dir,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    await process.wait()
    return round(time.monotonic() - began, 2)


async def baseline_phase(parts: Parts, kind: str) -> dict[str, Any]:
    """One baseline in its own process on the worker's core; the simulator's share beside it."""
    cfg = parts.cfg
    timeout_s = cfg.deadline_s
    argv = [
        sys.executable, "-m", "bench", "--baseline", kind, "--api-base", parts.sim_url,
        "--concurrency", str(cfg.concurrency), "--tokens", str(cfg.tokens),
        "--tps", f"{cfg.tps:g}", "--ttft", f"{cfg.ttft_s:g}", "--timeout", f"{timeout_s:g}",
        "--provider", cfg.provider, *(("--rich",) if cfg.rich else ()),
    ]  # fmt: skip
    note(f"baseline {kind}: {cfg.concurrency} streams")
    sim_before, began = tree_cpu_seconds(parts.sim.pid), time.monotonic()
    cores_before = core_jiffies()
    with affinity(parts.placement.workers[0]):
        process = await asyncio.create_subprocess_exec(
            *argv, env=child_env(), cwd=parts.run_dir,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s + 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        return {"error": f"no answer within {timeout_s + 60:g} s"}
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    (parts.run_dir / f"baseline-{kind}.log").write_bytes(err)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        return {"error": f"exit {process.returncode}: {err.decode(errors='replace')[-500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    elapsed = time.monotonic() - began
    result["core_busy_share"] = core_busy_share(cores_before, core_jiffies())
    result["simulator_cpu_share"] = round(
        (tree_cpu_seconds(parts.sim.pid) - sim_before) / elapsed, 3
    )
    return result
