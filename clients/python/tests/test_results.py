"""Batches and their records: submitted, followed as they are recorded, paged, waited for."""

from __future__ import annotations

from itertools import islice
from typing import Dict, List

import pytest

from cluster import Cluster
from drover_client import Client, Record, WaitTimeout


def mixed_jobs(count: int) -> List[Dict[str, object]]:
    """Exec jobs that print their index and handler jobs that echo it, alternately."""
    jobs: List[Dict[str, object]] = []
    for index in range(count):
        if index % 2:
            jobs.append({"handler": "noop", "payload": f"echo-{index}", "name": f"n{index}"})
        else:
            jobs.append({"cmd": ["printf", f"out-{index}"], "name": f"n{index}"})
    return jobs


def expected_result(index: int) -> bytes:
    return (f"echo-{index}" if index % 2 else f"out-{index}").encode()


def test_as_completed_gives_every_record_once_with_its_result(client: Client) -> None:
    batch = client.submit(mixed_jobs(20), "mixed")
    assert batch.total == 20 and not batch.repeated
    records = list(batch.as_completed())

    assert sorted(record.id for record in records) == batch.job_ids
    cursors = [record.cursor for record in records]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    for record in records:
        index = record.id - batch.job_ids[0]
        assert record.batch == batch.id
        assert record.name == f"n{index}"
        assert record.state == "succeeded" and record.ok, record
        # An exec job exits; a handler has no exit code.
        assert record.exit_code == (None if index % 2 else 0)
        assert record.worker in ("w1", "w2")
        assert record.result == expected_result(index)
        assert record.text == expected_result(index).decode()


def test_results_come_in_pages_in_recording_order(client: Client) -> None:
    batch = client.submit(mixed_jobs(7), "paged")
    info = batch.wait(timeout=60)
    assert info.done and info.succeeded == 7 and info.total == 7

    followed = list(batch.as_completed())
    paged = list(batch.results(limit=2))
    assert paged == followed
    assert sorted(record.id for record in paged) == batch.job_ids

    # From a cursor: only what was recorded after it.
    later = list(batch.results(after=paged[2].cursor, limit=3))
    assert later == paged[3:]

    # Every batch's records hold this batch's, in the same order.
    everything = [record for record in client.results(limit=5) if record.batch == batch.id]
    assert everything == paged


def test_as_completed_after_a_cursor_gives_only_later_records(client: Client) -> None:
    batch = client.submit(mixed_jobs(10), "resumed")
    first = list(islice(batch.as_completed(), 4))
    assert len(first) == 4
    rest = list(batch.as_completed(after=first[-1].cursor))
    assert len(rest) == 6
    assert all(record.cursor > first[-1].cursor for record in rest)
    assert sorted(record.id for record in first + rest) == batch.job_ids


def test_follow_sees_every_batch_from_a_cursor(client: Client) -> None:
    recorded: List[Record] = list(client.results())
    cursor = recorded[-1].cursor if recorded else 0
    batch = client.submit(mixed_jobs(5), "followed")
    followed = list(islice(client.follow(after=cursor), 5))
    assert sorted(record.id for record in followed) == batch.job_ids


def test_wait_answers_once_the_batch_is_done_or_times_out(client: Client) -> None:
    batch = client.submit([{"handler": "sleep", "payload": "100"}] * 4, "sleepers")
    info = batch.wait()
    assert info.done and info.succeeded == 4 and info.pending == 0 and info.running == 0
    assert info.id == batch.id and info.name == "sleepers"

    slow = client.submit([{"handler": "sleep", "payload": "600000"}], "slow")
    with pytest.raises(WaitTimeout) as waited:
        slow.wait(timeout=0.2)
    assert f"batch {slow.id} is not done" in str(waited.value)
    assert slow.cancel() == 1
    cancelled = slow.wait(timeout=60)
    assert cancelled.cancelled == 1
    (record,) = list(slow.as_completed())
    assert record.state == "cancelled" and not record.ok


def test_a_submission_sent_again_under_its_key_is_queued_once(client: Client) -> None:
    first = client.submit([{"cmd": ["true"]}] * 3, "keyed", idempotency_key="py-keyed-1")
    again = client.submit([{"cmd": ["true"]}] * 3, "keyed", idempotency_key="py-keyed-1")
    assert again.id == first.id and again.repeated and not first.repeated
    assert again.job_ids == first.job_ids


def test_a_restart_of_the_coordinator_loses_and_repeats_no_record(own_cluster: Cluster) -> None:
    client = Client(own_cluster.url, token=own_cluster.token, timeout=30.0)
    batch = client.submit([{"handler": "sleep", "payload": "50"}] * 30, "restarted")
    records = batch.as_completed()
    seen = list(islice(records, 3))
    assert len(seen) == 3

    # The stream's connection dies with the coordinator; the iterator connects to the new one
    # and resumes after the last record it gave (Last-Event-ID).
    own_cluster.kill_coordinator()
    own_cluster.start_coordinator()
    seen.extend(records)

    assert sorted(record.id for record in seen) == batch.job_ids
    cursors = [record.cursor for record in seen]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert batch.info().succeeded == 30
