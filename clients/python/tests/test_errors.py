"""Refusals and failures: the coordinator's message and status, or the URL that did not
answer."""

from __future__ import annotations

import time

import pytest

from cluster import Cluster, free_port
from drover_client import (
    AuthError,
    BadRequest,
    Client,
    DroverConnectionError,
    DroverError,
    NotFound,
)

UNKNOWN = 987_654_321


def test_an_unknown_batch_is_not_found_with_the_coordinators_message(client: Client) -> None:
    batch = client.batch(UNKNOWN)
    for read in (batch.info, lambda: list(batch.results()), lambda: next(batch.as_completed())):
        with pytest.raises(NotFound) as refused:
            read()
        assert refused.value.status == 404
        assert refused.value.message == f"no batch {UNKNOWN}"
        assert str(UNKNOWN) in str(refused.value)


def test_an_unknown_job_or_result_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound) as refused:
        client.job(UNKNOWN)
    assert refused.value.message == f"no job {UNKNOWN}"
    with pytest.raises(NotFound) as refused:
        client.result(UNKNOWN)
    assert str(UNKNOWN) in refused.value.message

    # A job without a result (yet): the message says so, apart from an unknown one.
    running = client.submit([{"handler": "sleep", "payload": "600000"}], "no result")
    (job,) = running.job_ids
    with pytest.raises(NotFound) as refused:
        client.result(job)
    assert "result" in refused.value.message and refused.value.message != f"no job {job}"
    assert running.cancel() == 1


def test_a_bad_job_is_refused_naming_its_field(client: Client) -> None:
    with pytest.raises(BadRequest) as refused:
        client.submit([{"cmd": ["true"]}, {"cmd": ["true"], "slots": 0}], "bad")
    assert refused.value.status == 400
    assert refused.value.field == "jobs[1].slots"
    assert "jobs[1].slots" in refused.value.message

    with pytest.raises(BadRequest):
        client.call({"cmd": ["true"], "timeout": 5})


def test_a_malformed_cursor_is_refused(cluster: Cluster, client: Client) -> None:
    batch = client.submit([{"cmd": ["true"]}], "cursor")
    batch.wait(timeout=60)
    with pytest.raises(BadRequest) as refused:
        client._get_json(f"/api/batches/{batch.id}/results?after=abc")
    assert "after" in refused.value.message
    with pytest.raises(BadRequest) as beyond:
        list(batch.results(after=10**15))
    assert "beyond the end" in beyond.value.message


def test_a_wrong_token_is_an_auth_error(cluster: Cluster) -> None:
    wrong = Client(cluster.url, token="not-the-token")
    with pytest.raises(AuthError) as refused:
        wrong.status()
    assert refused.value.status == 401
    assert refused.value.message == "wrong token"

    # No token: loopback may read, but changes need the client token.
    anonymous = Client(cluster.url)
    assert "workers" in anonymous.status()
    with pytest.raises(AuthError) as refused:
        anonymous.submit([{"cmd": ["true"]}])
    assert "bearer token" in refused.value.message


def test_an_unreachable_coordinator_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    nobody = Client(url, retry_for=0.5)
    with pytest.raises(DroverConnectionError) as failed:
        nobody.status()
    assert url in str(failed.value) and "connection refused" in str(failed.value)
    assert isinstance(failed.value, ConnectionError) and isinstance(failed.value, DroverError)

    # A submission tries again for `retry_for`, then says the same.
    started = time.monotonic()
    with pytest.raises(DroverConnectionError) as failed:
        nobody.submit([{"cmd": ["true"]}])
    assert url in str(failed.value)
    assert time.monotonic() - started < 10
