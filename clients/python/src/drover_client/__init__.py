"""A Python client for drover, the cluster job coordinator, over its HTTP API.

    from drover_client import Client

    with Client("http://head:7701", token="client-secret") as client:
        batch = client.submit([{"cmd": ["sh", "-c", "echo $DROVER_JOB_ID"]}] * 10, "echo")
        for record in batch.as_completed():
            print(record.id, record.state, record.text)
        answer = client.call(handler="noop", payload=b"ping")
        assert answer.result == b"ping"

Standard library only; Python 3.9 or later.
"""

from .client import Batch, Client, new_idempotency_key
from .errors import (
    AuthError,
    BadRequest,
    Conflict,
    DroverConnectionError,
    DroverError,
    NotFound,
    Unavailable,
    WaitTimeout,
)
from .records import BatchInfo, Job, Record

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BadRequest",
    "Batch",
    "BatchInfo",
    "Client",
    "Conflict",
    "DroverConnectionError",
    "DroverError",
    "Job",
    "NotFound",
    "Record",
    "Unavailable",
    "WaitTimeout",
    "new_idempotency_key",
]
