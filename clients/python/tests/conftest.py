"""Fixtures: one cluster (a coordinator and two workers) shared by the tests, and clusters of
their own for tests that restart the coordinator."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from cluster import Cluster, bin_dir, kill_on_interrupt, start_cluster
from drover_client import Client


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
