"""Server-Sent Events, read line by line: each event's ``id``, ``event`` and ``data``, as the
coordinator's event streams send them (``id: <cursor>`` / ``event: result`` / ``data: {...}``,
and ``: keep-alive`` comments between)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional


@dataclass(frozen=True)
class Event:
    """One event of a stream."""

    event: str
    """Its type: ``message`` when the stream names none."""
    data: str
    """Its data lines, joined by newlines."""
    id: Optional[str]
    """The last event id the stream has given, this event's or an earlier one's."""


def parse_events(lines: Iterable[bytes]) -> Iterator[Event]:
    """The events in a stream of lines (each with or without its line ending).

    An event is dispatched at the blank line that ends it, so an event cut off by a lost
    connection is never given. Comments (``:``) and fields the format does not have are passed
    over; an event without data is not dispatched, as the format says.
    """
    event_type = ""
    data: List[str] = []
    last_id: Optional[str] = None
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield Event(event=event_type or "message", data="\n".join(data), id=last_id)
            event_type = ""
            data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
