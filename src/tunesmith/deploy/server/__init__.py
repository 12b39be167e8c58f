"""The OpenAI-compatible server: app (routes), auth (keys, limits), registry (adapters), batching (engine)."""
