"""Fixtures of the deployment tests: the image, built here on a base that can be had here."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from tests.deploy.docker import (
    Containers,
    docker,
    drop_replaced,
    image_id,
    inspect,
    one_build_at_a_time,
    script,
)
from tests.support import REPO

IMAGE = "streaming-worker:test"


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker engine that answers: reused if one runs, else installed and started."""
    script("docker-engine")


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    """TEST_BASE_IMAGE if set (e.g. the official python:3.11-slim-bookworm where it can be
    pulled), else the stand-in made from Debian's packages (scripts/stand-in-base, cached)."""
    return os.environ.get("TEST_BASE_IMAGE") or script("stand-in-base").splitlines()[-1]


@pytest.fixture(scope="session")
def image(base_image: str) -> str:
    """The project's Dockerfile built as `make image` builds it, on `base_image`."""
    previous = image_id(IMAGE)
    with one_build_at_a_time():
        started = time.monotonic()
        docker(
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            "--tag",
            IMAGE,
            str(REPO),
            timeout_s=900,
        )
        build_s = time.monotonic() - started
    drop_replaced(IMAGE, previous)
    size = inspect(IMAGE)["Size"]
    base_size = inspect(base_image)["Size"]
    report = {
        "image": IMAGE,
        "base": base_image,
        "build_s": round(build_s, 1),
        "size_mb": round(size / 1e6),
        "base_size_mb": round(base_size / 1e6),
        "added_mb": round((size - base_size) / 1e6),
    }
    print(f"\nimage_built {json.dumps(report)}")  # the figures CI logs show
    return IMAGE


@pytest.fixture
def containers(image: str) -> Iterator[Containers]:
    started = Containers(image)
    yield started
    started.remove_all()
