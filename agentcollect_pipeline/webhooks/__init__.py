"""The webhook receiver: a raw ASGI app served with agentcollect_pipeline.sandboxes.server."""
