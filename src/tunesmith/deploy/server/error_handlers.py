"""OpenAI-style error bodies for everything FastAPI or a route raises: ``{"error": {message, type, param, code}}``.

Validation errors are 400 (not FastAPI's 422) with ``param`` naming the parameter; anything unexpected is a
500 in the same format, logged with its traceback.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.deploy.server.protocol import APIError

log = logging.getLogger(__name__)


class ErrorJSONResponse(JSONResponse):
    """Error bodies may quote the request (a model name, a field name): ASCII-escaped, any text encodes."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(e: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return ErrorJSONResponse(e.body(), status_code=e.status, headers=headers)


def validation_message(first: dict) -> tuple[str, str | None]:
    """The message and ``param`` of a request validation error (the first one)."""
    if first.get("type") == "json_invalid":  # loc holds the character position, not a parameter
        pos = [x for x in first.get("loc", ()) if x != "body"]
        where = f" at character {pos[0]}" if pos else ""
        return f"the request body is not valid JSON: {first.get('ctx', {}).get('error', 'decode error')}{where}", None
    param = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
    msg = first.get("msg", "invalid request")
    if first.get("type") == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif first.get("type") == "extra_forbidden":
        msg = "unrecognized request argument (not an OpenAI parameter of this endpoint)"
    return f"{param + ': ' if param else ''}{msg}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_req, e: APIError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req, e: RequestValidationError):
        errs = e.errors()
        msg, param = validation_message(errs[0] if errs else {"loc": (), "msg": "invalid request"})
        return error_response(APIError(400, msg, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req, e: StarletteHTTPException):
        code = "not_found" if e.status_code == 404 else None
        return error_response(APIError(e.status_code, str(e.detail), code=code))

    @app.exception_handler(Exception)
    async def _bug(_req, e: Exception):  # a bug; still answer in OpenAI's format
        log.exception("unhandled error")
        return JSONResponse(APIError(500, "internal server error", type="server_error").body(), status_code=500)
