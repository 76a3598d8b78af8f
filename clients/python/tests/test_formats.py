"""The client's reading of the formats, without a server: event streams and result fields."""

from __future__ import annotations

from typing import List

import pytest

from drover_client.client import call_spec, job_json
from drover_client.events import Event, parse_events
from drover_client.records import Record, result_bytes


def lines(text: str) -> List[bytes]:
    return [line.encode() for line in text.splitlines(keepends=True)]


def test_events_are_read_as_the_format_says() -> None:
    stream = (
        ": keep-alive\n"
        "id: 7\nevent: result\ndata: {\"a\": 1}\n\n"
        "data: first\r\ndata:second\r\n\r\n"
        "retry: 100\nid: 9\nevent: done\ndata: {\"cursor\": 9}\n\n"
        "id: 10\nevent: result\ndata: cut off before its blank line\n"
    )
    assert list(parse_events(lines(stream))) == [
        Event(event="result", data='{"a": 1}', id="7"),
        Event(event="message", data="first\nsecond", id="7"),
        Event(event="done", data='{"cursor": 9}', id="9"),
    ]


def test_results_are_bytes_from_either_spelling() -> None:
    assert result_bytes({"result": "héllo"}) == "héllo".encode()
    assert result_bytes({"result_base64": "/wCA"}) == b"\xff\x00\x80"
    assert result_bytes({}) is None
    with pytest.raises(ValueError, match="both"):
        result_bytes({"result": "a", "result_base64": "YQ=="})
    with pytest.raises(ValueError, match="not base64"):
        result_bytes({"result_base64": "***"})

    record = Record.from_json(
        {"cursor": 3, "id": 5, "batch": 1, "name": None, "state": "succeeded", "exit_code": 0,
         "worker": "w", "duration_ms": 2, "finished_at_ms": 1, "error": None,
         "result": "[1, 2]", "a_field_added_later": True}
    )
    assert record.json() == [1, 2] and record.text == "[1, 2]" and record.ok


def test_bytes_payloads_go_as_base64_and_calls_take_one_form() -> None:
    assert job_json({"handler": "noop", "payload": b"\xff"}) == {
        "handler": "noop",
        "payload_base64": "/w==",
    }
    assert job_json({"handler": "noop", "payload": "text"})["payload"] == "text"
    assert call_spec(None, ["true"], None, None, {"max_attempts": 1}) == {
        "cmd": ["true"],
        "max_attempts": 1,
    }
    with pytest.raises(TypeError):
        call_spec({"cmd": ["true"]}, ["true"], None, None, {})
    with pytest.raises(TypeError):
        call_spec(None, None, None, None, {})
