"""Fixtures: one cluster (a coordinator and two workers) shared by the tests, and clusters of
their own for tests that restart the coordinator."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Iterator, Optional

import pytest

from cluster import Cluster, bin_dir, kill_on_interrupt, start_cluster
from drover_client import Client


# The longest a test may take: one that waits for a record that never comes fails, rather than
# hanging the suite.
TEST_DEADLINE_S = 180


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    def expired(signum: int, frame: Optional[FrameType]) -> None:
        # Not an OSError (which the client takes for a lost connection and retries): pytest's
        # own failure, which nothing in the client catches.
        pytest.fail(f"the test took more than {TEST_DEADLINE_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_DEADLINE_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def binaries() -> Path:
    kill_on_interrupt()
    return bin_dir()


@pytest.fixture(scope="session")
def cluster(binaries: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = start_cluster(binaries, tmp_path_factory.mktemp("cluster"), ["w1", "w2"], slots=2)
    yield started
    started.stop()


@pytest.fixture
def own_cluster(binaries: Path, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster for one test: a coordinator and two one-slot workers."""
    started = start_cluster(binaries, tmp_path, ["a1", "a2"], slots=1)
    yield started
    started.stop()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with Client(cluster.url, token=cluster.token, timeout=30.0) as made:
        yield made
