"""Local Bill.com v2 API sandbox: `BillComSandbox(config, clock).app` is an ASGI app."""

from .app import BillComSandbox, SandboxClock, SandboxConfig, main

__all__ = ["BillComSandbox", "SandboxClock", "SandboxConfig", "main"]
