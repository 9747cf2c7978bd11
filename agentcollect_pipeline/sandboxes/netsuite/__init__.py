"""Local NetSuite REST/SuiteQL sandbox: `NetSuiteSandbox(config, clock).app` is an ASGI app."""

from .app import NetSuiteSandbox, SandboxClock, SandboxConfig, account_slug, main

__all__ = ["NetSuiteSandbox", "SandboxClock", "SandboxConfig", "account_slug", "main"]
