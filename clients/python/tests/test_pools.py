"""The elastic fleet's pools, through the client: a coordinator with a `process` pool whose
workers are real worker processes it starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from cluster import Cluster, wait_for
from drover_client import Client


def test_a_pool_reads_as_drover_pools_json_prints_it(binaries: Path, tmp_path: Path) -> None:
    config = tmp_path / "drover.toml"
    worker = binaries / "drover-worker"
    config.write_text(
        '[[pool]]\nname = "cpu"\nprovider = "process"\nmin = 1\nmax = 2\n\n'
        f"[pool.process]\ncommand = [{str(worker)!r}]\n"
    )
    cluster = Cluster(binaries, tmp_path)
    # Inherited by the pool's workers, as the token is.
    cluster.coordinator_env = {
        "DROVER_CONFIG": str(config),
        "DROVER_SCRATCH_DIR": str(tmp_path / "scratch"),
    }
    try:
        cluster.start_coordinator()
        with Client(cluster.url, token=cluster.token, timeout=30.0) as client:

            def registered() -> Optional[Dict[str, Any]]:
                pools = client.pools()
                assert [pool["name"] for pool in pools] == ["cpu"], pools
                return pools[0] if pools[0]["idle"] == 1 else None

            pool = wait_for(f"the pool's worker to register\n{cluster.logs()}", registered)
            assert (pool["provider"], pool["min"], pool["max"]) == ("process", 1, 2)
            assert (pool["desired"], pool["booting"], pool["busy"]) == (1, 0, 0)
            assert (pool["launched"], pool["failed_launches"], pool["terminated"]) == (1, 0, 0)
            assert pool["last_error"] is None
            assert client.status()["pools"] == [pool]
    finally:
        cluster.stop()
