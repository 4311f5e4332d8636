"""The event loop's HTTP/1.1 client (workers.backends.http1) against scripted raw servers: body
framings, split packets, keep-alive reuse, a pooled connection the server closed, failures."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from workers.backends import http1

CHUNKED_BODY = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n"


async def serve(handler):
    """A loopback server running ``handler(reader, writer, number)`` for each connection."""
    count = {"connections": 0}

    async def on_connect(reader, writer):
        count["connections"] += 1
        try:
            await handler(reader, writer, count["connections"])
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/x?q=1", count


async def read_request(reader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


async def body_of(response: http1.Response) -> bytes:
    body = b""
    while chunk := await response.read(2.0):
        body += chunk
    return body


async def post(url: str) -> http1.Response:
    return await http1.post(url, {"Accept": "*/*"}, b'{"a":1}', connect_timeout_s=2, head_timeout_s=2)


@pytest.mark.parametrize("split", [1, 2, 3, 7, 1000])
def test_chunked_body_split_into_packets_of_any_size(split):
    async def handler(reader, writer, _number):
        request = await read_request(reader)
        assert request.startswith(b"POST /v1/x?q=1 HTTP/1.1\r\n")
        assert b"\r\nContent-Length: 7\r\n" in request and request.endswith(b'{"a":1}')
        data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY
        for start in range(0, len(data), split):
            writer.write(data[start:start + split])
            await writer.drain()
            await asyncio.sleep(0)

    async def main():
        server, url, _count = await serve(handler)
        async with server:
            response = await post(url)
            assert response.status_code == 200
            assert await body_of(response) == b"hello, world"
            assert response.complete
            response.close()

    asyncio.run(main())


def test_keep_alive_connection_is_reused_and_one_the_server_dropped_is_replaced():
    async def handler(reader, writer, number):
        for answered in range(10):
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            if number == 1 and answered == 2:
                return  # the third request on the first connection: dropped without a byte of answer
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async def main():
        server, url, count = await serve(handler)
        async with server:
            for _ in range(4):
                response = await post(url)
                assert await body_of(response) == b"ok"
                response.close()
            # 1st and 2nd on connection 1; the 3rd is dropped there and sent again on connection 2
            assert count["connections"] == 2
            http1.loop_pool().close()

    asyncio.run(main())


def test_a_body_ending_with_the_connection_and_an_interim_response():
    async def handler(reader, writer, _number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()

    async def main():
        server, url, _count = await serve(handler)
        async with server:
            response = await post(url)
            assert response.status_code == 200
            assert ("content-type", "text/plain") in response.headers
            assert await body_of(response) == b"all of it"
            response.close()
            assert not http1.loop_pool().idle.get(http1.parse_url(url).origin)  # not kept: no framing

    asyncio.run(main())


def test_a_chunked_body_cut_short_is_a_protocol_error():
    async def handler(reader, writer, _number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        await writer.drain()

    async def main():
        server, url, _count = await serve(handler)
        async with server:
            response = await post(url)
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                await body_of(response)
            response.close()

    asyncio.run(main())


def test_silence_is_a_read_timeout_and_nothing_listening_a_connect_error():
    async def handler(reader, writer, _number):
        await read_request(reader)
        await asyncio.sleep(5)

    async def main():
        server, url, _count = await serve(handler)
        async with server:
            with pytest.raises(httpx.ReadTimeout):
                await http1.post(url, {}, b"{}", connect_timeout_s=2, head_timeout_s=0.2)
        with pytest.raises(httpx.ConnectError, match="refused"):
            await post(url)

    asyncio.run(main())


def test_url_credentials_become_basic_auth_and_a_header_with_a_newline_is_refused():
    seen = {}

    async def handler(reader, writer, _number):
        seen["request"] = await read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async def main():
        server, url, _count = await serve(handler)
        async with server:
            with_user = url.replace("http://", "http://user:p%40ss@")
            response = await post(with_user)
            assert response.status_code == 204 and response.complete
            response.close()
            assert b"\r\nAuthorization: Basic dXNlcjpwQHNz\r\n" in seen["request"]
            with pytest.raises(httpx.LocalProtocolError):
                await http1.post(url, {"Authorization": "Bearer x\r\nX-Evil: 1"}, b"{}", connect_timeout_s=2,
                                 head_timeout_s=2)

    asyncio.run(main())


def test_https_to_a_server_that_speaks_no_tls_is_a_connect_error_in_its_own_words():
    async def handler(reader, writer, _number):
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async def main():
        server, url, _count = await serve(handler)
        async with server:
            with pytest.raises(httpx.ConnectError, match="^TLS: ") as caught:
                await post(url.replace("http://", "https://"))
            assert "not permitted" not in str(caught.value)

    asyncio.run(main())
