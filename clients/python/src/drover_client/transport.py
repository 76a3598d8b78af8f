"""HTTP to one coordinator with the standard library (``http.client``): requests on a small pool
of kept-alive connections, event streams on connections of their own, and the coordinator's
refusals turned into exceptions that carry its message and status."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from .errors import DroverConnectionError, DroverError, error_for_status

USER_AGENT = "drover-client-python/0.1"

# How long an event stream may stay silent before its connection is taken for lost: the
# coordinator sends a keep-alive comment every 15 s, so three of them missed.
STREAM_IDLE_TIMEOUT = 45.0

# Idle connections kept for the next requests; more are closed once answered.
MAX_IDLE_CONNECTIONS = 4

Connection = Union[http.client.HTTPConnection, http.client.HTTPSConnection]


@dataclass
class Answer:
    """A successful answer: its status, headers and whole body."""

    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self, url: str) -> Any:
        """The body as JSON; a body that is not JSON is the coordinator's fault, said so."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise DroverError(
                f"the answer from {url} is not JSON: {_excerpt(self.body)}",
                status=self.status,
                url=url,
            ) from None


class Transport:
    """Requests to the coordinator at one URL (``http://host:port``, with an optional path
    prefix where a proxy serves it under one)."""

    def __init__(
        self,
        url: str,
        token: Optional[str],
        timeout: float,
        ca_file: Optional[str] = None,
    ) -> None:
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"the coordinator's URL must be http:// or https://, not {url!r}")
        if not parts.hostname:
            raise ValueError(f"the coordinator's URL names no host: {url!r}")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._ssl: Optional[ssl.SSLContext] = (
            ssl.create_default_context(cafile=ca_file) if self._https else None
        )
        self._headers = {"User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._idle: List[Connection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Closes the idle connections (streams close when their iterators end)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Answer:
        """Sends one request and reads its whole answer; an error status raises the exception
        for it, with the coordinator's message.

        A kept-alive connection the coordinator closed meanwhile is found out on use: then, and
        only then, the request goes again at once on a new connection, since the first one
        never reached the coordinator.
        """
        url = self.url + path
        sent_headers = dict(self._headers)
        sent_headers["Accept"] = "application/json"
        if body is not None:
            sent_headers["Content-Type"] = "application/json"
        sent_headers.update(headers or {})
        wait = self._timeout if timeout is None else timeout
        for reuse in (True, False):
            connection, reused = self._take(reuse, wait, url)
            sent = False
            try:
                connection.request(method, self._prefix + path, body=body, headers=sent_headers)
                sent = True
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                if reused and _closed_before_answer(error):
                    continue
                raise DroverConnectionError(
                    f"lost the connection to the coordinator at {url}: {describe(error, wait)}",
                    url=url,
                    request_sent=sent,
                ) from error
            if response.will_close:
                connection.close()
            else:
                self._give_back(connection)
            answer = Answer(response.status, dict(response.getheaders()), data)
            if response.status >= 300:
                raise refusal(response.status, data, url)
            return answer
        raise AssertionError("unreachable: the second try uses a new connection")

    def stream(self, path: str, headers: Mapping[str, str]) -> "EventStream":
        """Opens an event stream on a connection of its own; an error status raises the
        exception for it."""
        url = self.url + path
        sent_headers = dict(self._headers)
        sent_headers.update({"Accept": "text/event-stream", "Cache-Control": "no-cache"})
        sent_headers.update(headers)
        connection = self._connect(STREAM_IDLE_TIMEOUT, url)
        try:
            connection.request("GET", self._prefix + path, headers=sent_headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise DroverConnectionError(
                f"lost the connection to the coordinator at {url}: "
                f"{describe(error, STREAM_IDLE_TIMEOUT)}",
                url=url,
                request_sent=True,
            ) from error
        if response.status != 200:
            try:
                data = response.read()
            except (OSError, http.client.HTTPException):
                data = b""
            connection.close()
            raise refusal(response.status, data, url)
        kind = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "text/event-stream":
            connection.close()
            raise DroverError(
                f"{url} answered {kind or 'no content type'}, not an event stream",
                status=response.status,
                url=url,
            )
        return EventStream(connection, response)

    def _take(self, reuse: bool, timeout: float, url: str) -> Tuple[Connection, bool]:
        """An idle connection (if `reuse` and there is one) or a new one, set to `timeout`."""
        if reuse:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is not None:
                connection.timeout = timeout
                if connection.sock is not None:
                    connection.sock.settimeout(timeout)
                return connection, True
        return self._connect(timeout, url), False

    def _connect(self, timeout: float, url: str) -> Connection:
        connection: Connection
        if self._https:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._ssl
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            connection.connect()
        except OSError as error:
            connection.close()
            raise DroverConnectionError(
                f"cannot reach the coordinator at {url}: {describe(error, timeout)}",
                url=url,
                request_sent=False,
            ) from error
        # Requests are small and answers awaited: no waiting to fill a segment.
        if connection.sock is not None:
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _give_back(self, connection: Connection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()


class EventStream:
    """An open event stream: its lines as they arrive, until the coordinator ends it or the
    connection is lost (then reading raises OSError or http.client.HTTPException)."""

    def __init__(self, connection: Connection, response: http.client.HTTPResponse) -> None:
        self._connection = connection
        self._response = response

    def lines(self) -> Iterator[bytes]:
        """Each line with its ending; ends where the stream does."""
        while True:
            line = self._response.readline()
            if not line:
                return
            yield line

    def close(self) -> None:
        """Closes the connection (the coordinator stops sending)."""
        self._response.close()
        self._connection.close()


def refusal(status: int, body: bytes, url: str) -> DroverError:
    """The exception for an error answer: its JSON ``error`` (and ``field``), else its text."""
    message = ""
    field = None
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            message = str(parsed.get("error") or "")
            field_value = parsed.get("field")
            field = str(field_value) if field_value is not None else None
    except ValueError:
        pass
    if not message:
        text = _excerpt(body)
        reason = http.client.responses.get(status, "error")
        message = f"{url}: {reason}" + (f": {text}" if text else "")
    return error_for_status(status, message, field=field, url=url)


def describe(error: BaseException, timeout: float) -> str:
    """A connection failure in a few words."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused; check the address and that the coordinator is up"
    if isinstance(error, socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name ({error.strerror or error})"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the coordinator closed the connection before answering"
    if isinstance(error, http.client.IncompleteRead):
        return "the answer was cut off"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({error.verify_message}); pass ca_file"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def _closed_before_answer(error: BaseException) -> bool:
    """True for how a kept-alive connection the peer has closed fails on its next use."""
    return isinstance(
        error,
        (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
         ConnectionAbortedError),
    )


def _excerpt(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
