"""What the harness reads from /proc (CPU time, memory, busy cores) and how it places
processes on cores (affinity, a cgroup v1 CPU quota)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from bench.config import BenchError

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, all its threads, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    # Split after the command name, which may contain spaces: fields 14 and 15 are then 11, 12.
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (the simulator's children, for instance)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
            parents.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 10_000:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for each in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            total += cpu_seconds(each)
    return total


def status_kib(pid: int, key: str) -> int:
    """A `/proc/<pid>/status` memory line (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def core_jiffies() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per core from /proc/stat."""
    cores: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text(encoding="ascii").splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            numbers = [int(v) for v in values[:8]]
            idle = numbers[3] + numbers[4]  # idle + iowait
            cores[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return cores


def core_busy_share(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> dict[str, float]:
    shares = {}
    for core, (busy, total) in after.items():
        busy0, total0 = before.get(core, (0, 0))
        shares[f"cpu{core}"] = round((busy - busy0) / max(total - total0, 1), 3)
    return shares


@contextlib.contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    """Run the block on `cpus`: a process spawned inside starts pinned, with no race."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CFS_PERIOD_US = 100_000


@contextlib.contextmanager
def cpu_quota(pid: int, share: float, *, name: str) -> Iterator[None]:
    """Hold process `pid` to `share` of one core with a cgroup v1 CPU quota."""
    group = CGROUP_CPU / f"sw-bench-{os.getpid()}-{name}"
    try:
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(int(share * CFS_PERIOD_US)))
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as error:
        raise BenchError(
            f"--worker-cpu-quota needs root and cgroup v1 at {CGROUP_CPU}: {error}"
        ) from None
    try:
        yield
    finally:
        # A group must be empty to go: move the process (if still there) back first.
        with contextlib.suppress(OSError):
            (CGROUP_CPU / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()
