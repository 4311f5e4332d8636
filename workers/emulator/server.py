"""The emulator server: one loopback port, three protocols under path prefixes.

* ``/tgi/<model>``: a TGI instance serving that one model (TGI serves one model per server);
* ``/ollama``: an Ollama server with every configured model;
* ``/openai``: a vLLM-style OpenAI-compatible server with every configured model.

It runs an asyncio loop in a daemon thread so synchronous tests and commands can use it, and
every stream is a coroutine, so concurrent requests never wait for each other.
"""
from __future__ import annotations

import asyncio
import json
import threading
import traceback
from collections.abc import Iterable
from urllib.parse import quote

from . import ollama, openai, tgi
from .config import EmulatedModel, Fault
from .http import BadRequest, ClientGone, Connection, Request, read_request
from .runtime import LoggedRequest, State, apply_server_fault

KINDS = ("tgi", "ollama", "openai")
# The request log is for tests; a long-running demo must not grow it without bound.
MAX_LOGGED_REQUESTS = 20_000


class EmulatorServer:
    def __init__(self, models: Iterable[EmulatedModel], host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = None) -> None:
        self.models: list[EmulatedModel] = list(models)
        names = [m.name for m in self.models]
        if not names:
            raise ValueError("the emulator needs at least one model")
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique: {names}")
        self.host = host
        self.port = port
        self.api_key = api_key or None
        self.request_log: list[LoggedRequest] = []
        self._state = State(models={m.name: m for m in self.models}, api_key=self.api_key)
        self.reset_faults()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()

    # ------------------------------------------------------------ public API

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url_for(self, kind: str, name: str) -> str:
        """The base URL to register for ``name`` served through protocol ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"unknown protocol {kind!r}; expected one of {', '.join(KINDS)}")
        if name not in self._state.models:
            raise KeyError(f"no emulated model named {name!r}")
        if kind == "tgi":
            return f"{self.base_url}/tgi/{quote(name, safe=':')}"
        return f"{self.base_url}/{kind}"

    def set_fault(self, name: str, fault: Fault | None) -> None:
        """Make model ``name`` misbehave from its next request on; None restores normal service."""
        if name not in self._state.models:
            raise KeyError(f"no emulated model named {name!r}")
        with self._state.lock:
            self._state.faults[name] = fault

    def reset_faults(self) -> None:
        """Every model back to the fault it was configured with (usually none)."""
        with self._state.lock:
            self._state.faults = {m.name: m.fault for m in self.models}

    def start(self) -> EmulatorServer:
        """Start listening; returns once the port is open."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # report to the caller, e.g. address in use
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"emulator-{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            self._loop = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close the port and every open connection (including stalled ones)."""
        if self._thread is None or self._loop is None:
            return
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._server = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------ internals

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._serve_connection, self.host, self.port,
                                                  limit=64 * 1024, backlog=256)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        conn = Connection(reader, writer)
        try:
            while conn.keep_alive:
                try:
                    request = await read_request(reader, writer)
                except BadRequest as exc:
                    conn.keep_alive = False
                    await conn.respond(exc.status, [("content-type", "text/plain")], exc.message.encode())
                    break
                if request is None:
                    break
                conn.begin(request)
                try:
                    await self._dispatch(request, conn)
                except (ClientGone, ConnectionError, asyncio.CancelledError):
                    raise
                except Exception:
                    # A bug in the emulator itself: say so loudly rather than hang the client.
                    traceback.print_exc()
                    if not conn.headers_sent:
                        conn.keep_alive = False
                        await conn.respond(500, [("content-type", "text/plain; charset=utf-8")],
                                           b"emulator internal error")
                    else:
                        conn.drop()
                if not conn.headers_sent:
                    break  # the handler dropped or reset the connection
        except (ClientGone, ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    def _log(self, request: Request) -> None:
        body = None
        if request.body:
            try:
                body = json.loads(request.body.decode("utf-8"))
            except ValueError:
                body = None
        if len(self.request_log) >= MAX_LOGGED_REQUESTS:
            del self.request_log[: MAX_LOGGED_REQUESTS // 2]
        self.request_log.append(LoggedRequest(request.method, request.path, body, request.headers))

    def _tgi_model(self, path: str) -> tuple[EmulatedModel | None, str]:
        """The model whose TGI base path prefixes ``path``, longest name first, and the rest."""
        rest = path[len("/tgi/"):]
        for name in sorted(self._state.models, key=len, reverse=True):
            if rest == name or rest.startswith(name + "/"):
                return self._state.models[name], rest[len(name):]
        return None, ""

    async def _dispatch(self, request: Request, conn: Connection) -> None:
        self._log(request)
        path = request.path
        if path.startswith("/tgi/"):
            model, sub = self._tgi_model(path)
            if model is None:
                await conn.respond(404, [])
                return
            # A TGI server serves one model, so its server faults hit every route, health included.
            if await apply_server_fault(self._state, model.name, conn):
                return
            await tgi.handle(self._state, model, sub, request, conn)
        elif path == "/ollama" or path.startswith("/ollama/"):
            await ollama.handle(self._state, path[len("/ollama"):], request, conn)
        elif path == "/openai" or path.startswith("/openai/"):
            await openai.handle(self._state, path[len("/openai"):], request, conn)
        elif path == "/" and request.method in ("GET", "HEAD"):
            await conn.respond(200, [("content-type", "text/plain; charset=utf-8")], self._index().encode())
        else:
            await conn.respond(404, [("content-type", "text/plain; charset=utf-8")], b"not found")

    def _index(self) -> str:
        lines = ["Backend emulator (fake models for tests and demos).", ""]
        for kind in KINDS:
            lines.append(f"{kind}: " + "  ".join(f"{m.name}={self.url_for(kind, m.name)}" for m in self.models))
        return "\n".join(lines) + "\n"
