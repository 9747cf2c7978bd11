"""Serve any ASGI app with uvicorn, either in a background thread (tests) or in the foreground (CLI)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

__all__ = ["ServerHandle", "serve_forever", "serve_in_thread"]


def _bind(host: str, port: int) -> socket.socket:
    # Binding ourselves (instead of letting uvicorn do it) is what lets port=0 report the real port.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, on_started: Callable[[], None] | None = None,
                 handle_signals: bool = True) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._handle_signals = handle_signals

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self._handle_signals:
            # An embedded server must never steal the host process's SIGINT/SIGTERM.
            yield
            return
        with super().capture_signals():
            yield


def _config(app: Any, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        # Auto-detection mistakes bound async methods and callable instances for ASGI2 apps.
        "interface": "asgi3",
        "timeout_graceful_shutdown": 3,
    }
    options.update(kwargs)
    return uvicorn.Config(app, host=host, port=port, **options)


class ServerHandle:
    """A running uvicorn server in a daemon thread. Use as a context manager or call stop()."""

    def __init__(self, server: _Server, thread: threading.Thread, host: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        self.url = _url(host, port)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerHandle(url={self.url!r})"


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, *, startup_timeout: float = 10.0,
                    **uvicorn_options: Any) -> ServerHandle:
    """Start `app` on host:port in a daemon thread and return once it accepts connections."""
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    started = threading.Event()
    server = _Server(_config(app, host, bound_port, **uvicorn_options), on_started=started.set,
                     handle_signals=False)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # uvicorn reports bind/startup failures via SystemExit
            failure.append(exc)
        finally:
            started.set()
            sock.close()

    thread = threading.Thread(target=run, name=f"uvicorn:{bound_port}", daemon=True)
    thread.start()
    if not started.wait(startup_timeout) or not server.started:
        server.should_exit = True
        thread.join(2)
        raise RuntimeError(f"server on {_url(host, bound_port)} failed to start: {failure or 'timeout'}")
    return ServerHandle(server, thread, host, bound_port)


def serve_forever(app: Any, host: str = "127.0.0.1", port: int = 0, *,
                  on_started: Callable[[str], None] | None = None, **uvicorn_options: Any) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; `on_started(url)` runs once the port accepts requests."""
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    url = _url(host, bound_port)
    callback = (lambda: on_started(url)) if on_started is not None else None
    server = _Server(_config(app, host, bound_port, **uvicorn_options), on_started=callback)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
