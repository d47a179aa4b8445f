"""One error format for the whole API (docs/cti.md):

    {"error": {"code": "snake_case", "message": "a sentence", "fields": {"path": "problem"}}}

`ApiError(status, code, message, fields)` is raised by routes; `install_error_handlers(app)` turns it,
FastAPI's request validation (422 naming each field), Starlette's HTTP errors (404, 405, ...) and any
unexpected exception (500, logged, no details leaked) into that format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hotline.log import get_logger

log = get_logger(__name__)

STATUS_CODES: Final = {
    400: "bad_request",
    401: "not_signed_in",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    423: "locked",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})


def error_body(code: str, message: str, fields: Mapping[str, str] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = dict(fields)
    return {"error": error}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, error.fields), status_code=error.status, headers=error.headers
    )


def add_field(fields: dict[str, str], path: str, message: str) -> None:
    """Collect one problem; several problems of one path are joined."""
    fields[path] = f"{fields[path]}; {message}" if path in fields else message


def location_path(location: Sequence[Any], *, skip_first: bool = False) -> str:
    parts = [str(part) for part in location]
    if skip_first and parts:
        parts = parts[1:]
    # pydantic names validator functions in locations; they say nothing to a user.
    return ".".join(part for part in parts if not part.startswith("function-"))


def _clean(message: str) -> str:
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def validation_fields(errors: Iterable[Mapping[str, Any]], *, skip_first: bool = False) -> dict[str, str]:
    fields: dict[str, str] = {}
    for error in errors:
        add_field(
            fields, location_path(error.get("loc", ()), skip_first=skip_first), _clean(str(error["msg"]))
        )
    return fields


def invalid(fields: Mapping[str, str], message: str | None = None) -> ApiError:
    count = len(fields)
    return ApiError(
        422, "invalid", message or f"the request has {count} problem{'s' if count != 1 else ''}", fields
    )


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return error_response(error)

    async def request_invalid(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        fields = validation_fields(error.errors(), skip_first=True)
        if any(str(detail.get("type")) == "json_invalid" for detail in error.errors()):
            return error_response(ApiError(400, "bad_json", "the body is not valid JSON", fields))
        return error_response(invalid(fields))

    async def http_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        code = STATUS_CODES.get(error.status_code, "error")
        message = error.detail if isinstance(error.detail, str) else code.replace("_", " ")
        return error_response(ApiError(error.status_code, code, message, headers=error.headers))

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("api.unexpected_error", path=request.url.path, method=request.method)
        return error_response(ApiError(500, "internal_error", "the server failed to handle this request"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
