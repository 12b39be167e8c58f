"""The ASGI application: the FastAPI routes wrapped in the response counter and the body limit.

Every failure a client can cause is answered with a 4xx and an OpenAI error body (error_handlers.py); the
continuous-batching worker runs the model on its own thread, so a slow or failing request never blocks the
event loop. Layout: routes.py (HTTP routes) -> prompts.py (prompt ids) -> generation.py (slot, engine,
waiting) -> responses.py (OpenAI response bodies); continuous_batching.py is the engine. tokenizer_routes.py
serves vLLM's /tokenizer_info, /tokenize and /detokenize.
"""

from __future__ import annotations

from fastapi import FastAPI

from tunesmith.deploy.server.error_handlers import install_error_handlers
from tunesmith.deploy.server.middleware import BodyLimit, CountResponses
from tunesmith.deploy.server.routes import router
from tunesmith.deploy.server.state import ServerState
from tunesmith.deploy.server.tokenizer_routes import router as tokenizer_router


def create_app(state: ServerState) -> CountResponses:
    app = FastAPI(title="tunesmith", version="1",
                  description="OpenAI-compatible API for a base model and its adapters.")
    app.state.tunesmith = state
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(tokenizer_router)
    # (an included router is opaque: its paths are read from the router)
    routes = {r.path for r in [*app.routes, *router.routes, *tokenizer_router.routes] if hasattr(r, "path")}
    return CountResponses(BodyLimit(app, state.cfg.max_request_bytes), state.metrics, routes)
