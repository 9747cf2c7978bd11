"""Local OpenAI-compatible chat-completions sandbox: `LLMSandbox(api_key).app` is an ASGI app."""

from .app import DEFAULT_API_KEY, LLMSandbox, main

__all__ = ["DEFAULT_API_KEY", "LLMSandbox", "main"]
