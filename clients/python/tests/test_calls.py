"""One-request calls, jobs and their raw results."""

from __future__ import annotations

import json

from drover_client import Client


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
