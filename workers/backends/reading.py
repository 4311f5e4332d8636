"""Reading a streamed generation: the transport's lines through the adapter's parser.

Two readers of one request and one parser: ``read_stream`` on the calling thread (httpx), and
``aread_stream`` in the running event loop (``http1``), where one thread can read every stream
of a worker process.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from workers.backends.base import BackendError, Endpoint, StreamItem, StreamParser
from workers.backends.transport import astream_lines, stream_lines


def read_stream(endpoint: Endpoint, path: str, body: dict, parser: StreamParser) -> Iterator[StreamItem]:
    try:
        for line in stream_lines(endpoint, path, body, start_clock=parser.start):
            if not parser.complete:  # after the end: read on, so the connection can go back to the pool
                yield from parser.feed(line)
    except BackendError:
        if not parser.complete:
            raise
        # The answer was complete; a failure while draining the rest does not matter.
    yield from parser.end()


async def aread_stream(endpoint: Endpoint, path: str, body: dict,
                       parser: StreamParser) -> AsyncIterator[list[StreamItem]]:
    try:
        async for lines in astream_lines(endpoint, path, body, start_clock=parser.start):
            items: list[StreamItem] = []
            failure = None
            for line in lines:
                if parser.complete:
                    continue
                try:
                    items.extend(parser.feed(line))
                except BackendError as exc:
                    failure = exc
                    break
            if items:
                yield items  # what came before a failure is shown, as on the thread
            if failure is not None:
                raise failure
    except BackendError:
        if not parser.complete:
            raise
    rest = parser.end()
    if rest:
        yield rest
