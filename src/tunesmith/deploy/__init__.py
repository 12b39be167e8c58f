"""Deployment: merge/export adapters and serve an OpenAI-compatible API."""
