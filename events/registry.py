"""The streams streambatch knows, by name: the one registry every list derives from.

The built-in streams (orders, clicks, logs) are registered here. A stream of
your own registers itself, without editing this package: name its
:class:`StreamSchema` in your package's ``streambatch.streams`` entry point
group (every streambatch process then knows it: flows, ``broker``, ``query``,
``status``, ``verify``), or call :func:`register_stream` in a process of your
own. See the README's "Adding a stream".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points

from events.clicks import CLICK_EVENT_TYPES, CLICKS_ARROW_SCHEMA, ClickEvent
from events.logs import LOG_EVENT_TYPES, LOGS_ARROW_SCHEMA, LogEvent
from events.orders import ORDER_EVENT_TYPES, ORDERS_ARROW_SCHEMA, OrderEvent
from events.stream import StreamSchema
from foundation.errors import ConfigError, UnknownStreamError

__all__ = [
    "CLICKS",
    "ENTRY_POINT_GROUP",
    "LOGS",
    "ORDERS",
    "STREAMS",
    "StreamRegistry",
    "get_stream",
    "register_stream",
    "stream_names",
]

ENTRY_POINT_GROUP = "streambatch.streams"

ORDERS = StreamSchema(
    name="orders",
    event_model=OrderEvent,
    event_types=ORDER_EVENT_TYPES,
    columns=ORDERS_ARROW_SCHEMA,
)
CLICKS = StreamSchema(
    name="clicks",
    event_model=ClickEvent,
    event_types=CLICK_EVENT_TYPES,
    columns=CLICKS_ARROW_SCHEMA,
)
LOGS = StreamSchema(
    name="logs",
    event_model=LogEvent,
    event_types=LOG_EVENT_TYPES,
    columns=LOGS_ARROW_SCHEMA,
)


class StreamRegistry(Mapping[str, StreamSchema]):
    """Streams by name: the built-in ones, then those of the entry point group, in order.

    The entry points are loaded on first use, not at import: a stream's own
    module may import this one.
    """

    def __init__(self, builtin: tuple[StreamSchema, ...], group: str) -> None:
        self._streams = {stream.name: stream for stream in builtin}
        self._group = group
        self._loaded = False

    def register(self, stream: StreamSchema) -> StreamSchema:
        """Add ``stream``; registering the same one twice is a no-op.

        Raises:
            ConfigError: another stream already has its name.
        """
        known = self._streams.get(stream.name)
        if known is not None and known is not stream:
            raise ConfigError(f"stream {stream.name!r} is registered twice")
        self._streams[stream.name] = stream
        return stream

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for point in sorted(entry_points(group=self._group), key=lambda point: point.name):
            stream = point.load()
            if not isinstance(stream, StreamSchema):
                raise ConfigError(
                    f"entry point {point.name} = {point.value} in {self._group} "
                    f"is a {type(stream).__name__}, not a StreamSchema"
                )
            self.register(stream)

    def __getitem__(self, name: str) -> StreamSchema:
        self._load_entry_points()
        return self._streams[name]

    def __iter__(self) -> Iterator[str]:
        self._load_entry_points()
        return iter(tuple(self._streams))

    def __len__(self) -> int:
        self._load_entry_points()
        return len(self._streams)


STREAMS = StreamRegistry((ORDERS, CLICKS, LOGS), ENTRY_POINT_GROUP)


def register_stream(stream: StreamSchema) -> StreamSchema:
    """Register ``stream`` in this process (an entry point registers it in all of them)."""
    return STREAMS.register(stream)


def stream_names() -> tuple[str, ...]:
    """Every registered stream's name, the built-in ones first."""
    return tuple(STREAMS)


def get_stream(name: str) -> StreamSchema:
    """The stream called ``name``.

    Raises:
        UnknownStreamError: naming the known ones.
    """
    try:
        return STREAMS[name]
    except KeyError:
        raise UnknownStreamError(
            f"unknown stream {name!r}; known: {', '.join(sorted(STREAMS))}"
        ) from None
