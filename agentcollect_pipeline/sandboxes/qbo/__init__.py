"""Local QuickBooks Online API sandbox: `QBOSandbox(config, clock).app` is an ASGI app."""

from .app import QBOSandbox, SandboxClock, SandboxConfig, main

__all__ = ["QBOSandbox", "SandboxClock", "SandboxConfig", "main"]
