"""Schemas of the configuration models in the OpenAPI document.

Configuration bodies are validated by the routes themselves (off the event loop, with the whole-document
checks), so FastAPI does not see their models. `SchemaBook` puts them in the document anyway: routes
refer to `book.request(Model)` / `book.response(Model)` / `book.page(Model)` in their ``openapi_extra``,
and `book.install(app)` generates the JSON Schemas once (validation and serialization forms, as
pydantic names them) into ``components.schemas`` and points the references there.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

Mode = Literal["validation", "serialization"]
_PLACEHOLDER = "#/hotline-schema/"


class SchemaBook:
    def __init__(self) -> None:
        self._models: dict[str, tuple[type[BaseModel], Mode]] = {}

    def _placeholder(self, model: type[BaseModel], mode: Mode) -> dict[str, Any]:
        name = f"{model.__module__}.{model.__qualname__}:{mode}"
        self._models[name] = (model, mode)
        return {"$ref": _PLACEHOLDER + name}

    def request(self, model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
        return {
            "requestBody": {
                "required": required,
                "content": {"application/json": {"schema": self._placeholder(model, "validation")}},
            }
        }

    def schema(self, model: type[BaseModel]) -> dict[str, Any]:
        return self._placeholder(model, "serialization")

    def response(self, model: type[BaseModel], description: str = "the object") -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": self.schema(model)}}}

    def page(self, model: type[BaseModel]) -> dict[str, Any]:
        return {
            "description": "one page of objects and how many there are",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "items": {"type": "array", "items": self.schema(model)},
                            "total": {"type": "integer", "minimum": 0},
                        },
                        "required": ["items", "total"],
                    }
                }
            },
        }

    def install(self, app: FastAPI) -> None:
        generate = app.openapi

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is not None:
                return app.openapi_schema
            document = generate()
            names = list(self._models)
            refs, definitions = models_json_schema(
                [self._models[name] for name in names], ref_template="#/components/schemas/{model}"
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for key, value in definitions.get("$defs", {}).items():
                schemas.setdefault(key, value)
            targets = {_PLACEHOLDER + name: refs[self._models[name]]["$ref"] for name in names}
            app.openapi_schema = _wire_formats(_replace_refs(document, targets))
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]


def _replace_refs(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref in targets:
            return {**value, "$ref": targets[ref]}
        return {key: _replace_refs(item, targets) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_refs(item, targets) for item in value]
    return value


# Local times of day (business hours) travel as "09:00:00", without the UTC offset JSON Schema's "time"
# format demands: say so with a pattern instead.
_LOCAL_TIME = {"type": "string", "pattern": r"^[0-2][0-9]:[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?$"}


def _wire_formats(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("format") == "time" and value.get("type") == "string":
            return {**{key: item for key, item in value.items() if key != "format"}, **_LOCAL_TIME}
        return {key: _wire_formats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_wire_formats(item) for item in value]
    return value
