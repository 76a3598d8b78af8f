"""What the coordinator answers, as small dataclasses: a finished job's record, a job, a batch.

A result is bytes. JSON carries it as ``"result"`` when it is UTF-8 and as ``"result_base64"``
otherwise (and neither when there is none); :func:`result_bytes` turns either back into the
bytes the job returned.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional


def result_bytes(data: Mapping[str, Any]) -> Optional[bytes]:
    """The result bytes of a JSON record, from ``result`` or ``result_base64``."""
    text = data.get("result")
    encoded = data.get("result_base64")
    if text is not None and encoded is not None:
        raise ValueError("the record has both result and result_base64")
    if text is not None:
        if not isinstance(text, str):
            raise ValueError("the record's result is not a string")
        return text.encode("utf-8")
    if encoded is not None:
        if not isinstance(encoded, str):
            raise ValueError("the record's result_base64 is not a string")
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error as error:
            raise ValueError(f"the record's result_base64 is not base64: {error}") from None
    return None


class _HasResult:
    """Helpers for a record that carries result bytes."""

    result: Optional[bytes]

    @property
    def text(self) -> Optional[str]:
        """The result as UTF-8 text, or None when there is no result.

        Raises UnicodeDecodeError for a result that is not UTF-8 (use ``result``, the bytes).
        """
        return None if self.result is None else self.result.decode("utf-8")

    def json(self) -> Any:
        """The result parsed as JSON. Raises ValueError when there is no result or it is not
        JSON."""
        if self.result is None:
            raise ValueError("the job has no result")
        return json.loads(self.result)


@dataclass(frozen=True)
class Record(_HasResult):
    """A finished job's final record, as a batch's followers receive it."""

    cursor: int
    """Where the record is in recording order: resume after it (``as_completed(after=...)``)."""
    id: int
    batch: int
    name: Optional[str]
    state: str
    """``succeeded``, ``failed`` or ``cancelled``."""
    exit_code: Optional[int]
    worker: Optional[str]
    duration_ms: Optional[int]
    finished_at_ms: Optional[int]
    error: Optional[str]
    """Why it failed or was cancelled."""
    result: Optional[bytes] = field(default=None, repr=False)
    """The recorded attempt's result, byte for byte: a handler's return value, or an exec job's
    standard output."""

    @property
    def ok(self) -> bool:
        """True when the job succeeded."""
        return self.state == "succeeded"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Record":
        """A record from the coordinator's JSON (fields it does not know are left out)."""
        return cls(
            cursor=int(data["cursor"]),
            id=int(data["id"]),
            batch=int(data["batch"]),
            name=data.get("name"),
            state=str(data["state"]),
            exit_code=data.get("exit_code"),
            worker=data.get("worker"),
            duration_ms=data.get("duration_ms"),
            finished_at_ms=data.get("finished_at_ms"),
            error=data.get("error"),
            result=result_bytes(data),
        )


@dataclass(frozen=True)
class Job(_HasResult):
    """One job as ``GET /api/jobs/{id}`` has it; ``raw`` holds the whole JSON (its attempt
    ``history``, ``outputs``, ...)."""

    id: int
    batch: int
    name: Optional[str]
    state: str
    """``pending``, ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
    attempts: int
    worker: Optional[str]
    exit_code: Optional[int]
    duration_ms: Optional[int]
    error: Optional[str]
    output_tail: Optional[str]
    """The last 4 KiB of its output, for display."""
    waiting: Optional[str]
    """Why it waits, while it is pending."""
    result: Optional[bytes] = field(default=None, repr=False)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """True once the job is finished, whichever way."""
        return self.state in ("succeeded", "failed", "cancelled")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Job":
        """A job from the coordinator's JSON."""
        return cls(
            id=int(data["id"]),
            batch=int(data["batch"]),
            name=data.get("name"),
            state=str(data["state"]),
            attempts=int(data.get("attempts", 0)),
            worker=data.get("worker"),
            exit_code=data.get("exit_code"),
            duration_ms=data.get("duration_ms"),
            error=data.get("error"),
            output_tail=data.get("output_tail"),
            waiting=data.get("waiting"),
            result=result_bytes(data),
            raw=dict(data),
        )


@dataclass(frozen=True)
class BatchInfo:
    """A batch's progress, as ``GET /api/batches/{id}`` has it; ``raw`` holds the whole JSON."""

    id: int
    name: str
    total: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    done: bool
    """True when no job of the batch is pending or running, and every record is on disk."""
    waiting: List[Dict[str, Any]] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "BatchInfo":
        """A batch from the coordinator's JSON."""
        return cls(
            id=int(data["id"]),
            name=str(data.get("name", "")),
            total=int(data["total"]),
            pending=int(data["pending"]),
            running=int(data["running"]),
            succeeded=int(data["succeeded"]),
            failed=int(data["failed"]),
            cancelled=int(data["cancelled"]),
            done=bool(data["done"]),
            waiting=list(data.get("waiting") or []),
            raw=dict(data),
        )
