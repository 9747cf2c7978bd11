"""Retry timing shared by the AR source clients: bounded exponential backoff with full jitter.

Which failures are retried, and what a spent budget raises, is each provider's own business (its client);
this module only says how long to wait.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import httpx

__all__ = ["RetryPolicy", "retry_after_seconds"]


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 0.25
    max_delay_s: float = 20.0

    def delay(self, attempt: int, retry_after: float | None = None, *, retry_after_cap: float | None = None) -> float:
        """Full jitter spreads concurrent workers' retries instead of synchronising them. A server's
        Retry-After is a floor, itself capped at `retry_after_cap` (default: `max_delay_s`)."""
        jittered = random.uniform(0, min(self.max_delay_s, self.base_delay_s * (2**attempt)))
        if retry_after is None:
            return jittered
        cap = self.max_delay_s if retry_after_cap is None else retry_after_cap
        return max(jittered, min(retry_after, cap))


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (never negative); None when absent or not a number of seconds
    (an HTTP-date, "nan", anything else)."""
    value = response.headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return None if math.isnan(seconds) else max(seconds, 0.0)
