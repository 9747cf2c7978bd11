"""Machinery every local sandbox shares: the clock, scripted faults, a background ticker, the ASGI entry
point and lifespan, and the `app`/`stats` surface."""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


class SandboxClock:
    """The sandbox's notion of "now".

    With an explicit `start` the clock is frozen and moves only through `advance()`/`set()`, which keeps
    tests deterministic. Without one it follows real time (plus any advance), which is what a long-running
    demo server wants. Pass `ticking=` to override either default.
    """

    def __init__(self, start: datetime | None = None, *, ticking: bool | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("SandboxClock start must be timezone-aware")
        self._lock = threading.Lock()
        self._ticking = (start is None) if ticking is None else ticking
        self._base = (start or datetime.now(UTC)).astimezone(UTC)
        self._mono = time.monotonic()

    def now(self) -> datetime:
        with self._lock:
            if self._ticking:
                return self._base + timedelta(seconds=time.monotonic() - self._mono)
            return self._base

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._base += timedelta(seconds=seconds)
        return self.now()

    def set(self, moment: datetime) -> datetime:
        if moment.tzinfo is None:
            raise ValueError("SandboxClock.set needs a timezone-aware datetime")
        with self._lock:
            self._base = moment.astimezone(UTC)
            self._mono = time.monotonic()
        return self.now()


@dataclass(frozen=True)
class Fault:
    """One scripted failure for the next matching request (`path`/`method` None match any)."""

    kind: str
    path: str | None
    method: str | None
    delay_s: float
    after_processing: bool


class FaultQueue:
    """Faults consumed in the order they were queued, each by the first request it matches.

    Not locked itself: every sandbox already serialises access to its state with its own lock.
    """

    def __init__(self, kinds: Collection[str], normalise_path: Callable[[str], str]):
        self.kinds = tuple(kinds)
        self._normalise = normalise_path
        self._queue: deque[Fault] = deque()

    def add(
        self,
        kind: str,
        path: str | None = None,
        times: int = 1,
        delay_s: float = 0.0,
        after_processing: bool = False,
        method: str | None = None,
    ) -> None:
        if kind not in self.kinds:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {self.kinds}")
        fault = Fault(
            kind=kind,
            path=None if path in (None, "") else self._normalise(path),
            method=method.upper() if method else None,
            delay_s=float(delay_s),
            after_processing=bool(after_processing),
        )
        self._queue.extend([fault] * int(times))

    def take(self, op: str, method: str | None = None) -> Fault | None:
        for index, fault in enumerate(self._queue):
            if (fault.path is None or fault.path == op) and (fault.method is None or fault.method == method):
                del self._queue[index]
                return fault
        return None

    def clear(self) -> None:
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)


class Ticker:
    """Calls `tick()` every `interval_s` in a daemon thread: a long-running sandbox on a real-time clock
    delivers its status callbacks and events without a test driving it."""

    def __init__(self, tick: Callable[[], Any], name: str):
        self._tick = tick
        self._name = name
        self._running: tuple[threading.Thread, threading.Event] | None = None

    def start(self, interval_s: float) -> None:
        if self._running is not None:
            return
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(interval_s):
                # One failed delivery round must not end the ticker; the next tick retries.
                with contextlib.suppress(Exception):
                    self._tick()

        thread = threading.Thread(target=run, name=self._name, daemon=True)
        thread.start()
        self._running = (thread, stop)

    def stop(self) -> None:
        if self._running is not None:
            thread, stop = self._running
            stop.set()
            thread.join(5)
            self._running = None


async def serve_lifespan(receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """Answer an ASGI lifespan scope: the sandboxes keep no resources to open or close."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def asgi_app(handle: Callable[[dict[str, Any], Callable[..., Any], Callable[..., Any]], Awaitable[None]]
             ) -> Callable[..., Any]:
    """`handle` (a sandbox's bound `_asgi`) as a plain coroutine function, so any ASGI server (not only
    ours) recognises it as ASGI3."""

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        await handle(scope, receive, send)

    return app


class SandboxSurface:
    """`app` and `stats` of a sandbox that sets `_app` (see `asgi_app`) and keeps its counters in `_stats`
    under `_lock`, the lock that guards all of its state."""

    _app: Callable[..., Any]
    _lock: Any
    _stats: dict[str, Any]

    @property
    def app(self) -> Callable[..., Any]:
        return self._app

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._stats)
