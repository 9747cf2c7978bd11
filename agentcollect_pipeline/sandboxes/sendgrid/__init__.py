"""Local SendGrid v3 API sandbox: `SendGridSandbox(api_key, clock).app` is an ASGI app."""

from .app import SandboxClock, SendGridSandbox, WebhookDelivery, main

__all__ = ["SandboxClock", "SendGridSandbox", "WebhookDelivery", "main"]
