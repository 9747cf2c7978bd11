"""Small ASGI helpers shared by the webhook receiver and the local sandboxes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


async def read_body(receive: Callable[..., Any], limit: int | None = None) -> bytes | None:
    """The request body, or None once it passes `limit` bytes (read no further: a hostile body stays small)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
