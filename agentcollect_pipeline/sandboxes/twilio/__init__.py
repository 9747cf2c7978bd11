"""Local Twilio REST API sandbox: `TwilioSandbox(account_sid, auth_token, clock).app` is an ASGI app."""

from .app import SandboxClock, TwilioSandbox, WebhookDelivery, main, twilio_signature

__all__ = ["SandboxClock", "TwilioSandbox", "WebhookDelivery", "main", "twilio_signature"]
