"""The errors a client raises: what the coordinator refused, with its message and status, or why
it could not be reached."""

from __future__ import annotations

from typing import Optional


class DroverError(Exception):
    """The coordinator refused a request, or answered one in a way the client cannot use.

    ``message`` is the coordinator's own (its JSON ``error``), ``status`` the HTTP status (None
    when no answer came), ``field`` the request field at fault when the coordinator names one,
    and ``url`` the address asked.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        field: Optional[str] = None,
        url: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
        self.url = url

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.message} (HTTP {self.status})"


class BadRequest(DroverError):
    """The request itself is wrong (400, 413, 415): a bad job, field, cursor or key."""


class AuthError(DroverError):
    """No token, a wrong one, or the read token on a change (401, 403)."""


class NotFound(DroverError):
    """No such batch, job or result (404)."""


class Conflict(DroverError):
    """The job or batch is not in a state that allows the request (409)."""


class Unavailable(DroverError):
    """The coordinator cannot answer now (503): a full queue, shutting down, or a standby with no
    leader to send the request to. The same request may succeed later."""


class DroverConnectionError(DroverError, ConnectionError):
    """No answer came: the coordinator could not be reached, or the connection was lost and
    could not be made again in time. The message names the URL.

    ``request_sent`` is True when the request had been sent when the connection was lost: the
    coordinator may have acted on it (a submission or call sent again under its idempotency key
    is still queued once).
    """

    def __init__(self, message: str, *, url: str, request_sent: bool = False) -> None:
        super().__init__(message, url=url)
        self.request_sent = request_sent


class WaitTimeout(DroverError, TimeoutError):
    """A wait ended before what it waited for."""


def error_for_status(
    status: int, message: str, *, field: Optional[str] = None, url: Optional[str] = None
) -> DroverError:
    """The exception for an HTTP error status, carrying the coordinator's message."""
    kind: type[DroverError]
    if status in (400, 413, 415, 422):
        kind = BadRequest
    elif status in (401, 403):
        kind = AuthError
    elif status == 404:
        kind = NotFound
    elif status == 409:
        kind = Conflict
    elif status in (502, 503, 504):
        kind = Unavailable
    else:
        kind = DroverError
    return kind(message, status=status, field=field, url=url)
