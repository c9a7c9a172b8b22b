"""The Docker CLI as the tests drive it: a real engine, real images, the host network."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.support import REPO, one_at_a_time


def docker(*args: str, timeout_s: float = 120, check: bool = True) -> str:
    """Run `docker ARGS`; return stdout, fail with stderr."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result.stdout


def script(name: str, timeout_s: float = 600) -> str:
    """Run one of scripts/ (they install or start what they need); return its stdout."""
    result = subprocess.run(
        [str(REPO / "scripts" / name)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, f"scripts/{name}:\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()


def one_build_at_a_time() -> contextlib.AbstractContextManager[None]:
    """Builds of the project's Dockerfile, one after another: the image and compose tests
    run in two pytest-xdist processes, and two builds at once would each do all the work (the
    legacy builder shares only layers that are finished); the second finds them cached."""
    return one_at_a_time("docker-build")


def image_id(name: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", name],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def drop_replaced(name: str, previous: str | None) -> None:
    """Remove the image `name` pointed to before a rebuild, so reruns do not fill the disk
    (it stays if a container or another tag still uses it)."""
    if previous is not None and previous != image_id(name):
        docker("rmi", previous, check=False)


def inspect(name: str) -> dict[str, Any]:
    [data] = json.loads(docker("inspect", name))
    return dict(data)


@dataclass
class Container:
    """A container the test started; removed by the fixture that made it."""

    name: str

    def inspect(self) -> dict[str, Any]:
        return inspect(self.name)

    def logs(self) -> str:
        result = subprocess.run(
            ["docker", "logs", self.name], capture_output=True, text=True, check=False, timeout=60
        )
        return result.stdout + result.stderr

    def health(self) -> str:
        return str(self.inspect()["State"].get("Health", {}).get("Status", ""))

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    async def wait_for(
        self, probe_name: str, wanted: str, *, timeout_s: float = 60, interval_s: float = 0.2
    ) -> None:
        """Poll the container's health (or another State field) until it reads `wanted`."""
        deadline = time.monotonic() + timeout_s
        seen = ""
        while True:
            state = (await asyncio.to_thread(self.inspect))["State"]
            seen = (
                str(state.get("Health", {}).get("Status", ""))
                if probe_name == "health"
                else (str(state.get(probe_name)))
            )
            if seen == wanted:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: {probe_name} is {seen!r}, not {wanted!r}, after {timeout_s} s"
                    f"\n{self.logs()[-3000:]}"
                )
            await asyncio.sleep(interval_s)


@dataclass
class Containers:
    """Starts containers on the host network and removes them all at the end."""

    image: str
    started: list[Container] = field(default_factory=list)

    def run(
        self,
        *command: str,
        env: dict[str, str] | None = None,
        mounts: Iterable[tuple[str, str]] = (),
        options: Iterable[str] = (),
        detach: bool = True,
    ) -> Container:
        name = f"sw-test-{uuid.uuid4().hex[:10]}"
        args = ["run", "--name", name, "--network", "host"]
        if detach:
            args.append("--detach")
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        for source, target in mounts:
            args += ["--volume", f"{source}:{target}:ro"]
        args += [*options, self.image, *command]
        container = Container(name)
        self.started.append(container)
        subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=120)
        return container

    def remove_all(self) -> None:
        names = [container.name for container in self.started]
        if names:
            docker("rm", "--force", "--volumes", *names, check=False)
