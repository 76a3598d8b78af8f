"""The client: submit batches and calls, follow their results as they are recorded, read jobs and
their results, over the coordinator's HTTP API (``/api``)."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import secrets
import socket
import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    TypeVar,
    Union,
)
from urllib.parse import urlencode

from .errors import DroverConnectionError, DroverError, Unavailable, WaitTimeout
from .events import parse_events
from .records import BatchInfo, Job, Record
from .transport import STREAM_IDLE_TIMEOUT, Transport, describe

log = logging.getLogger("drover_client")
# Retries are logged (warnings) where the application configures logging, and nowhere else.
log.addHandler(logging.NullHandler())

T = TypeVar("T")

# After a lost connection: the first wait before trying again, doubled each time up to the most.
FIRST_RETRY_WAIT = 0.1
MAX_RETRY_WAIT = 2.0

# Waiting for a batch: how often its progress is asked, at first and at the most.
FIRST_POLL_WAIT = 0.05
MAX_POLL_WAIT = 1.0


def new_idempotency_key() -> str:
    """A fresh idempotency key: 128 random bits in hex."""
    return secrets.token_hex(16)


class Client:
    """A client of one coordinator's HTTP API.

    ``url`` is the coordinator's HTTP address (``http://head:7701``; ``https://`` where it
    serves TLS, with ``ca_file`` for a private CA). ``token`` is the client token (the
    coordinator's ``DROVER_TOKEN``), sent as ``Authorization: Bearer``; reads also take the read
    token, and from the coordinator's own machine need none. ``timeout`` bounds each request's
    wait for an answer, in seconds.

    Submissions and calls lost to a dropped connection are sent again under the same
    idempotency key, event streams resume from their cursor, and pages of results and waits for
    a batch ask again, for up to ``retry_for`` seconds of failing to reach the coordinator;
    other requests are tried once.

    A client may be shared between threads; use it as a context manager, or call
    :meth:`close`, to close its kept-alive connections.
    """

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        timeout: float = 60.0,
        *,
        retry_for: float = 30.0,
        ca_file: Optional[str] = None,
    ) -> None:
        self.timeout = timeout
        self.retry_for = retry_for
        self._transport = Transport(url, token, timeout, ca_file)

    @property
    def url(self) -> str:
        """The coordinator's URL."""
        return self._transport.url

    def close(self) -> None:
        """Closes the kept-alive connections."""
        self._transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # Submitting.

    def submit(
        self,
        jobs: Iterable[Mapping[str, Any]],
        name: Optional[str] = None,
        *,
        idempotency_key: Optional[str] = None,
    ) -> "Batch":
        """Submits a batch: ``jobs`` are dicts with the fields of a job file line
        (``{"cmd": [...]}`` or ``{"handler": ..., "payload": ...}``, and ``name``, ``env``,
        ``requires``, ``slots``, ``priority``, ``timeout_s``, ``max_attempts``, ``inputs``,
        ``outputs``); a ``payload`` given as bytes is sent as ``payload_base64``.

        The submission carries an idempotency key (``idempotency_key``, or one of its own): sent
        again after a lost connection, it is queued once. A repeat of a key answers with the
        batch it made first (``Batch.repeated``). A bad job raises :class:`BadRequest` naming
        it and its field (``jobs[3].slots``), and nothing is queued.
        """
        body: Dict[str, Any] = {"jobs": [job_json(job) for job in jobs]}
        if name is not None:
            body["name"] = name
        body["idempotency_key"] = idempotency_key or new_idempotency_key()
        encoded = json.dumps(body).encode("utf-8")
        answer = self._retrying(
            "submission",
            lambda: self._transport.request("POST", "/api/batches", body=encoded),
            reads=False,
        )
        submitted = answer.json(self.url + "/api/batches")
        return Batch(
            self,
            int(submitted["batch"]),
            first_job=int(submitted["first_job"]),
            total=int(submitted["jobs"]),
            repeated=bool(submitted.get("repeated", False)),
            unplaceable=list(submitted.get("unplaceable") or []),
        )

    def call(
        self,
        job: Optional[Mapping[str, Any]] = None,
        *,
        cmd: Optional[List[str]] = None,
        handler: Optional[str] = None,
        payload: Optional[Union[bytes, str]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        **fields: Any,
    ) -> Record:
        """Runs one job and answers with its final record, result included, in one request
        (``POST /api/call``), whatever its end (check ``record.state`` or ``record.ok``).

        Give the job as a dict (as for :meth:`submit`), or as ``cmd=[...]`` or ``handler=...``
        with ``payload`` (bytes or text) and any other job fields as keywords
        (``max_attempts=1``, ``timeout_s=60``). ``timeout`` bounds the wait for the job to
        finish (:class:`WaitTimeout` past it; the job goes on); None waits as long as it takes.

        The call carries an idempotency key: after a lost connection, or a request that waited
        ``Client.timeout`` without an answer, it is sent again and waits for the same job.
        """
        spec = call_spec(job, cmd, handler, payload, fields)
        encoded = json.dumps(spec).encode("utf-8")
        key = idempotency_key or new_idempotency_key()
        deadline = None if timeout is None else time.monotonic() + timeout
        path = "/api/call"

        def send() -> Any:
            wait = self.timeout
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(
                        f"the call did not finish within {timeout:g} s (idempotency key {key}); "
                        "call again with that key to wait on for it",
                        url=self.url + path,
                    )
                wait = min(wait, left)
            return self._transport.request(
                "POST", path, body=encoded, headers={"Idempotency-Key": key}, timeout=wait
            )

        answer = self._retrying("call", send, reads=False, long_answer=True)
        return Record.from_json(answer.json(self.url + path))

    # Reading.

    def batch(self, batch_id: int) -> "Batch":
        """A batch by its id, to follow or wait for (nothing is asked until then)."""
        return Batch(self, batch_id)

    def batches(self, limit: Optional[int] = None) -> List[BatchInfo]:
        """The batches on record (the newest ``limit`` only, if given)."""
        path = "/api/batches" + (f"?{urlencode({'limit': limit})}" if limit is not None else "")
        return [BatchInfo.from_json(item) for item in self._get_json(path)]

    def job(self, job_id: int) -> Job:
        """One job, with its recorded result (:class:`NotFound` for an unknown id)."""
        return Job.from_json(self._get_json(f"/api/jobs/{int(job_id)}"))

    def result(self, job_id: int) -> bytes:
        """A finished job's result, the bytes as they are (:class:`NotFound` for an unknown job
        or one without a result, saying which)."""
        path = f"/api/jobs/{int(job_id)}/result"
        return self._transport.request(
            "GET", path, headers={"Accept": "application/octet-stream"}
        ).body

    def results(self, after: int = 0, limit: Optional[int] = None) -> Iterator[Record]:
        """The records of every batch recorded so far, after the cursor ``after``, in
        recording order, fetched a page (of ``limit``, or the coordinator's default) at a
        time."""
        return self._pages("/api/results", after, limit)

    def follow(self, after: int = 0) -> Iterator[Record]:
        """Every batch's records as they are recorded, after the cursor ``after``: an endless
        iterator on ``GET /api/events`` that resumes from its cursor after a lost
        connection."""
        return self._follow("/api/events", after)

    def status(self) -> Dict[str, Any]:
        """The cluster at a glance, as ``drover status --json`` prints it."""
        status: Dict[str, Any] = self._get_json("/api/status")
        return status

    def workers(self) -> List[Dict[str, Any]]:
        """The workers, connected and recently gone, as ``drover workers --json`` prints
        them."""
        workers: List[Dict[str, Any]] = self._get_json("/api/workers")
        return workers

    def pools(self) -> List[Dict[str, Any]]:
        """The elastic fleet's pools (empty without any), as ``drover pools --json`` prints
        them: ``name``, ``provider``, ``min``, ``max``, ``desired``, ``booting``, ``idle``,
        ``busy``, ``launched``, ``failed_launches``, ``terminated``, ``last_error``."""
        pools: List[Dict[str, Any]] = self._get_json("/api/pools")
        return pools

    # How.

    def _get_json(self, path: str) -> Any:
        return self._transport.request("GET", path).json(self.url + path)

    def _post_json(self, path: str) -> Any:
        return self._transport.request("POST", path, body=b"{}").json(self.url + path)

    def _retrying(
        self,
        what: str,
        send: Callable[[], T],
        *,
        reads: bool,
        long_answer: bool = False,
    ) -> T:
        """`send()` until it answers. A lost connection (and for reads, an unavailable
        coordinator) is tried again with backoff until `retry_for` seconds have passed without
        reaching the coordinator. With `long_answer`, an answer not yet there after the
        request's timeout is asked for again at once: the request reached the coordinator,
        which may take long to answer it (a call waits for its job)."""
        wait = FIRST_RETRY_WAIT
        # The window runs from the first failure in a row, not from the first send: a call may
        # have waited long for its job before its connection was lost.
        give_up_at: Optional[float] = None
        while True:
            try:
                return send()
            except DroverConnectionError as error:
                if long_answer and error.request_sent and isinstance(
                    error.__cause__, socket.timeout
                ):
                    log.info("%s: no answer yet; asking again", what)
                    wait = FIRST_RETRY_WAIT
                    give_up_at = None
                    continue
                failure: DroverError = error
            except Unavailable as error:
                if not reads:
                    raise
                failure = error
            now = time.monotonic()
            if give_up_at is None:
                give_up_at = now + self.retry_for
            if now + wait > give_up_at:
                raise failure
            log.warning("%s: %s; trying again in %.1f s", what, failure, wait)
            time.sleep(wait)
            wait = min(wait * 2, MAX_RETRY_WAIT)

    def _pages(self, path: str, after: int, limit: Optional[int]) -> Iterator[Record]:
        cursor = int(after)
        while True:
            query: Dict[str, int] = {"after": cursor}
            if limit is not None:
                query["limit"] = int(limit)
            page_path = f"{path}?{urlencode(query)}"
            page = self._retrying(
                "results", lambda: self._get_json(page_path), reads=True
            )
            records = [Record.from_json(item) for item in page["results"]]
            yield from records
            if page.get("done") or not records:
                return
            cursor = int(page["cursor"])

    def _follow(self, path: str, after: int) -> Iterator[Record]:
        """The records of an event stream, resuming after the last one received when the
        connection is lost (``Last-Event-ID``), until the stream's ``done``."""
        cursor = int(after)
        first = True
        # A stream that ends at once without a record, again and again, is a coordinator that
        # cannot serve it: each such end waits longer before connecting again, up to a point.
        wait = FIRST_RETRY_WAIT
        give_up_at: Optional[float] = None
        while True:
            if first:
                target = path + (f"?{urlencode({'after': cursor})}" if cursor else "")
                headers: Dict[str, str] = {}
            else:
                target = path
                headers = {"Last-Event-ID": str(cursor)}
            stream = self._retrying(
                "event stream",
                lambda: self._transport.stream(target, headers),
                reads=True,
            )
            first = False
            opened = time.monotonic()
            received = False
            said: Optional[str] = None
            try:
                for event in parse_events(stream.lines()):
                    if event.event == "done":
                        return
                    if event.event == "error":
                        # Said before the coordinator ends a stream it cannot go on with (it
                        # stops leading, say): the stream is resumed like a lost one.
                        said = _error_of(event.data)
                        continue
                    if event.event != "result":
                        continue
                    record = _record_of(event.data, self.url + path)
                    # The stream resumes after the cursor it is given; a record at or before
                    # it was received already.
                    if record.cursor <= cursor:
                        continue
                    cursor = record.cursor
                    received = True
                    yield record
                lost = f"ended before done ({said})" if said else "ended before done"
            except (OSError, http.client.HTTPException) as error:
                lost = f"lost ({describe(error, STREAM_IDLE_TIMEOUT)})"
            finally:
                stream.close()
            log.warning("event stream %s %s; resuming after %d", path, lost, cursor)
            now = time.monotonic()
            if received or now - opened > 1.0:
                wait = FIRST_RETRY_WAIT
                give_up_at = None
                continue
            if give_up_at is None:
                give_up_at = now + self.retry_for
            if now + wait > give_up_at:
                raise DroverConnectionError(
                    f"the event stream at {self.url + path} {lost}, again and again for "
                    f"{self.retry_for:g} s",
                    url=self.url + path,
                    request_sent=True,
                )
            time.sleep(wait)
            wait = min(wait * 2, MAX_RETRY_WAIT)


class Batch:
    """A submitted batch: follow its records as they are recorded (:meth:`as_completed`), read
    them all (:meth:`results`), or wait for it to be done (:meth:`wait`).

    ``first_job`` and ``total`` are known for a batch :meth:`Client.submit` made (its jobs are
    ``first_job`` .. ``first_job + total - 1``, in the order given); ``repeated`` says the
    submission's idempotency key had made this batch already, and nothing new was queued.
    """

    def __init__(
        self,
        client: Client,
        batch_id: int,
        *,
        first_job: Optional[int] = None,
        total: Optional[int] = None,
        repeated: bool = False,
        unplaceable: Optional[List[Dict[str, Any]]] = None,
    ) -> None:
        self.client = client
        self.id = int(batch_id)
        self.first_job = first_job
        self.total = total
        self.repeated = repeated
        self.unplaceable: List[Dict[str, Any]] = unplaceable or []

    def __repr__(self) -> str:
        return f"Batch(id={self.id}, total={self.total})"

    @property
    def job_ids(self) -> List[int]:
        """The batch's job ids, in the order the jobs were given (known for a batch submitted
        by this client)."""
        if self.first_job is None or self.total is None:
            raise ValueError("the batch's jobs are known only from its submission")
        return list(range(self.first_job, self.first_job + self.total))

    def info(self) -> BatchInfo:
        """The batch's progress now (:class:`NotFound` for an unknown batch)."""
        return BatchInfo.from_json(self.client._get_json(f"/api/batches/{self.id}"))

    def as_completed(self, after: int = 0) -> Iterator[Record]:
        """Each job's final record as soon as it is recorded, in recording order, after the
        cursor ``after`` (0: from the start), on the batch's event stream; the iterator ends
        once the batch is done and every record has been given.

        A lost connection is made again, resuming after the last record received: nothing is
        missed and nothing repeated. To resume in another process, keep the last record's
        ``cursor`` and pass it as ``after``.
        """
        return self.client._follow(f"/api/batches/{self.id}/events", after)

    def results(self, after: int = 0, limit: Optional[int] = None) -> Iterator[Record]:
        """The batch's records recorded so far (all of them once it is done), after the cursor
        ``after``, in recording order, fetched a page (of ``limit``, or the coordinator's
        default) at a time."""
        return self.client._pages(f"/api/batches/{self.id}/results", after, limit)

    def wait(self, timeout: Optional[float] = None) -> BatchInfo:
        """Waits until the batch is done, and answers with its progress then;
        :class:`WaitTimeout` after ``timeout`` seconds (None: as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = FIRST_POLL_WAIT
        path = f"/api/batches/{self.id}"
        while True:
            info = BatchInfo.from_json(
                self.client._retrying(
                    "wait", lambda: self.client._get_json(path), reads=True
                )
            )
            if info.done:
                return info
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(
                        f"batch {self.id} is not done after {timeout:g} s "
                        f"({info.pending} pending, {info.running} running)",
                        url=self.client.url + path,
                    )
                wait = min(wait, left)
            time.sleep(wait)
            wait = min(wait * 1.5, MAX_POLL_WAIT)

    def cancel(self) -> int:
        """Cancels the batch's unfinished jobs; answers how many were cancelled."""
        answer = self.client._post_json(f"/api/batches/{self.id}/cancel")
        return int(answer["cancelled"])

    def retry(self) -> int:
        """Gives the batch's failed jobs fresh attempts; answers how many."""
        answer = self.client._post_json(f"/api/batches/{self.id}/retry")
        return int(answer["retried"])


def job_json(job: Mapping[str, Any]) -> Dict[str, Any]:
    """A job as the API takes it: the dict as given, with a bytes ``payload`` as
    ``payload_base64``."""
    if not isinstance(job, Mapping):
        raise TypeError(f"a job is a dict of job file fields, not {type(job).__name__}")
    encoded = dict(job)
    payload = encoded.get("payload")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        del encoded["payload"]
        encoded["payload_base64"] = base64.b64encode(bytes(payload)).decode("ascii")
    return encoded


def call_spec(
    job: Optional[Mapping[str, Any]],
    cmd: Optional[List[str]],
    handler: Optional[str],
    payload: Optional[Union[bytes, str]],
    fields: Mapping[str, Any],
) -> Dict[str, Any]:
    """The job of a call, from a dict or from keywords."""
    if job is not None:
        if cmd is not None or handler is not None or payload is not None or fields:
            raise TypeError("give the job either as a dict or as keywords, not both")
        return job_json(job)
    if (cmd is None) == (handler is None):
        raise TypeError("a call needs a job dict, or cmd=[...] or handler=... (one of them)")
    spec: Dict[str, Any] = dict(fields)
    if cmd is not None:
        spec["cmd"] = list(cmd)
    else:
        spec["handler"] = handler
    if payload is not None:
        spec["payload"] = payload
    return job_json(spec)


def _record_of(data: str, url: str) -> Record:
    try:
        return Record.from_json(json.loads(data))
    except (ValueError, KeyError, TypeError) as error:
        raise DroverError(f"{url} sent a record this client cannot read ({error}): {data[:200]}",
                          url=url) from None


def _error_of(data: str) -> str:
    """The message of an ``error`` event (``{"error": "..."}``), or its data as it is."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return data
    message = parsed.get("error") if isinstance(parsed, dict) else None
    return message if isinstance(message, str) else data
