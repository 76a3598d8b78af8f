"""A real coordinator and real workers for the tests, as child processes on loopback: the
binaries from the cargo target directory (``DROVER_BIN_DIR``, else built with ``cargo build
--bins`` into ``<repo>/target/debug``), free ports, a temporary data directory, a client token
so that every request is authenticated."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

REPO = Path(__file__).resolve().parents[3]

CLIENT_TOKEN = "py-client-secret"
WORKER_TOKEN = "py-worker-secret"

# How long a process has to come up, or a condition to come true.
STARTUP_WAIT = 60.0

T = TypeVar("T")


def bin_dir() -> Path:
    """Where the binaries are: ``DROVER_BIN_DIR`` as given, else the cargo target directory's
    ``debug``, (re)built first so that the tests never run an old build."""
    given = os.environ.get("DROVER_BIN_DIR")
    if given:
        directory = Path(given).resolve()
        for name in ("drover-coordinator", "drover-worker"):
            if not (directory / name).is_file():
                raise RuntimeError(f"DROVER_BIN_DIR={given} has no {name}; build it first")
        return directory
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    cargo = shutil.which("cargo")
    if cargo is None:
        raise RuntimeError("cargo is not on the PATH: build the binaries and set DROVER_BIN_DIR")
    subprocess.run([cargo, "build", "--locked", "--bins"], cwd=REPO, check=True)
    return target / "debug"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], Optional[T]], within: float = STARTUP_WAIT) -> T:
    """Polls ``check`` until it gives something other than None."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within:g} s waiting for {what}")
        time.sleep(0.05)


class Cluster:
    """A coordinator and its workers; :meth:`stop` kills them all."""

    def __init__(self, binaries: Path, directory: Path) -> None:
        self.binaries = binaries
        self.directory = directory
        self.port = free_port()
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.token = CLIENT_TOKEN
        self._coordinator: Optional[subprocess.Popen[bytes]] = None
        self._coordinator_starts = 0
        self._workers: Dict[str, subprocess.Popen[bytes]] = {}
        # More of the coordinator's environment (`DROVER_CONFIG`, say).
        self.coordinator_env: Dict[str, str] = {}

    def _env(self) -> Dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("DROVER_")}
        env.update(
            {
                "DROVER_TOKEN": CLIENT_TOKEN,
                "DROVER_WORKER_TOKEN": WORKER_TOKEN,
                "RUST_LOG": "info",
                "NO_COLOR": "1",
            }
        )
        return env

    def start_coordinator(self) -> None:
        """Starts the coordinator and waits until its HTTP API answers."""
        assert self._coordinator is None, "the coordinator runs already"
        self._coordinator_starts += 1
        log = open(self.directory / f"coordinator-{self._coordinator_starts}.log", "wb")
        self._coordinator = subprocess.Popen(
            [
                str(self.binaries / "drover-coordinator"),
                "--listen", f"127.0.0.1:{self.port}",
                "--http", f"127.0.0.1:{self.http_port}",
                "--data-dir", str(self.directory / "data"),
            ],
            env={**self._env(), **self.coordinator_env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        wait_for(f"the coordinator's HTTP API\n{self.logs()}", self._answers)

    def kill_coordinator(self) -> None:
        """Kills the coordinator with SIGKILL."""
        assert self._coordinator is not None, "the coordinator is not running"
        self._coordinator.kill()
        self._coordinator.wait()
        self._coordinator = None

    def start_worker(self, name: str, slots: int = 1) -> None:
        """Starts a worker (it registers on its own; see :meth:`wait_for_workers`)."""
        log = open(self.directory / f"worker-{name}.log", "ab")
        self._workers[name] = subprocess.Popen(
            [
                str(self.binaries / "drover-worker"),
                "--coordinator", f"127.0.0.1:{self.port}",
                "--name", name,
                "--slots", str(slots),
                "--scratch-dir", str(self.directory / "scratch" / name),
            ],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()

    def wait_for_workers(self, count: int) -> None:
        """Waits until ``count`` workers are connected."""

        def connected() -> Optional[bool]:
            workers = self._get("/api/workers")
            if workers is None:
                return None
            live = [worker for worker in workers if worker.get("gone_at_ms") is None]
            return True if len(live) >= count else None

        wait_for(f"{count} workers to register\n{self.logs()}", connected)

    def stop(self) -> None:
        """Kills every process it started."""
        for worker in self._workers.values():
            worker.kill()
        for worker in self._workers.values():
            worker.wait()
        self._workers.clear()
        if self._coordinator is not None:
            self.kill_coordinator()

    def logs(self) -> str:
        """The coordinator's logs, for messages of failed tests (the last lines)."""
        text = ""
        for start in range(1, self._coordinator_starts + 1):
            path = self.directory / f"coordinator-{start}.log"
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-40:])

    def _answers(self) -> Optional[bool]:
        if self._coordinator is not None and self._coordinator.poll() is not None:
            raise AssertionError(f"the coordinator exited:\n{self.logs()}")
        return True if self._get("/api/status") is not None else None

    def _get(self, path: str) -> Optional[Any]:
        """A GET with the token, by plain urllib (not the client under test); None while the
        coordinator does not answer."""
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return json.loads(answer.read())
        except (OSError, urllib.error.URLError):
            return None


def start_cluster(binaries: Path, directory: Path, workers: List[str], slots: int) -> Cluster:
    """A coordinator and these workers, registered."""
    cluster = Cluster(binaries, directory)
    try:
        cluster.start_coordinator()
        for name in workers:
            cluster.start_worker(name, slots)
        cluster.wait_for_workers(len(workers))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def kill_on_interrupt() -> None:
    """SIGTERM to the test run (a CI timeout) ends it as Ctrl-C does, so fixtures stop what they
    started."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
