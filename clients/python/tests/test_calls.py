"""One-request calls, jobs and their raw results."""

from __future__ import annotations

import json
import threading
from typing import List, Optional

from cluster import Cluster, wait_for
from drover_client import BatchInfo, Client, Record


def test_an_exec_call_answers_with_its_standard_output(client: Client) -> None:
    record = client.call(cmd=["sh", "-c", "printf 'hello\\n'; printf noise >&2"], name="hi")
    assert record.ok and record.state == "succeeded", record
    assert record.exit_code == 0
    assert record.name == "hi"
    assert record.result == b"hello\n"
    assert client.result(record.id) == b"hello\n"


def test_a_failed_call_answers_with_its_record(client: Client) -> None:
    record = client.call({"cmd": ["sh", "-c", "exit 3"], "max_attempts": 1})
    assert record.state == "failed" and not record.ok
    assert record.exit_code == 3
    assert record.error


def test_a_handler_call_round_trips_bytes_exactly(client: Client) -> None:
    binary = bytes([0xFF, 0x00, 0x80, 0xFE]) + "é".encode("latin-1") + b"\n\x01"
    record = client.call(handler="noop", payload=binary)
    assert record.ok, record
    assert record.result == binary
    assert client.result(record.id) == binary
    assert client.job(record.id).result == binary

    text = "héllo, 世界"
    record = client.call(handler="noop", payload=text)
    assert record.text == text
    assert client.result(record.id) == text.encode()

    document = {"answer": 42, "list": [1, "two", None]}
    record = client.call({"handler": "noop", "payload": json.dumps(document)})
    assert record.json() == document


def test_a_call_sent_again_under_its_key_runs_once(client: Client) -> None:
    first = client.call(handler="noop", payload=b"once", idempotency_key="py-call-once")
    again = client.call(handler="noop", payload=b"once", idempotency_key="py-call-once")
    assert again.id == first.id
    assert again.result == b"once"
    assert client.job(first.id).attempts == 1


def test_a_job_reads_with_its_history_and_result(client: Client) -> None:
    record = client.call(cmd=["printf", "abc"])
    job = client.job(record.id)
    assert job.id == record.id and job.batch == record.batch
    assert job.state == "succeeded" and job.done
    assert job.exit_code == 0 and job.attempts == 1
    assert job.result == b"abc" and job.text == "abc"
    assert job.raw["history"] == []


def test_a_call_cut_off_by_a_coordinator_restart_is_sent_again_and_runs_once(
    own_cluster: Cluster,
) -> None:
    client = Client(own_cluster.url, token=own_cluster.token, timeout=30.0)
    answers: List[Record] = []
    failures: List[BaseException] = []

    def call() -> None:
        try:
            answers.append(client.call(handler="sleep", payload="5000"))
        except BaseException as error:  # handed to the test's thread
            failures.append(error)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()

    def running() -> Optional[BatchInfo]:
        return next((batch for batch in client.batches() if batch.running), None)

    wait_for("the call's job to start", running)
    assert caller.is_alive(), "the call answered before the coordinator was killed"
    # The call's connection dies with the coordinator; the client sends the call again under
    # its idempotency key, and the coordinator started again waits for the same job.
    own_cluster.kill_coordinator()
    own_cluster.start_coordinator()
    caller.join(timeout=120)

    assert not failures, failures
    (record,) = answers
    assert record.ok, record
    (batch,) = client.batches()
    assert batch.total == 1 and batch.id == record.batch
