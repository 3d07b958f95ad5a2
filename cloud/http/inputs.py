"""What the API takes: JSON bodies and URL parameters as typed, nothing taken on a guess.

Pydantic's lax mode would read ``{"months": true}`` as one month, ``"12"`` as
twelve, ``0`` as ``false`` and ``?limit=1.0`` or ``?limit=+1`` as one. Here a
body is validated strictly (:class:`StrictBody`) and every URL parameter
strictly (:func:`refuse_loose_parameters`, run for every ``/api/v1`` route:
by ``require`` after the permission check, or as a dependency of the public
ones), so such a request is a 422 naming the field and nothing runs.

The two JSON types that arrive as strings keep their JSON reading: an enum
field takes its string values (:data:`BY_VALUE`, never an int or a bool), a
day takes ``YYYY-MM-DD`` (:data:`IsoDay`, never epoch seconds). JSON Schema
cannot tell ``1.0`` from ``1``: the schema says ``integer`` and the server
takes only the digits.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict

__all__ = ["BY_VALUE", "RULES", "IsoDay", "StrictBody", "refuse_loose_parameters"]

RULES = (
    "Requests are read as written, or refused with 422 naming the field. A JSON value has "
    'its schema\'s type exactly: an integer is written as one (`12`, never `12.0`, `"12"` '
    "or `true`; JSON Schema's `integer` cannot say so), a boolean is `true` or `false`, a "
    'day is `"YYYY-MM-DD"`, and an object takes no field it does not list. A URL '
    "parameter is written as its type (`limit=10`, never `10.0` or `+10`), given at most "
    "once, and only if the operation takes it. A request body over the server's limit "
    "(`ENTITLE_HTTP_MAX_BODY_BYTES`, 1 MiB unless set) is answered 413 unread."
)
"""The OpenAPI document's description: what JSON Schema cannot say about these rules."""

_INTEGER = re.compile(r"-?[0-9]+")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_BOOLEANS = ("true", "false")


class StrictBody(BaseModel):
    """Base of every request body: each field's JSON type exactly, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


BY_VALUE = Strict(False)
"""For an enum field of a :class:`StrictBody`: its JSON string values (lax enums match by value)."""


def _iso_day(value: Any) -> Any:
    if isinstance(value, str) and _DAY.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError as exc:  # e.g. 2026-02-30
            raise ValueError(f"not a day of the calendar: {exc}") from exc
    if isinstance(value, date):
        return value  # a default or a Python caller, never JSON
    raise ValueError("a day must be a JSON string YYYY-MM-DD")


IsoDay = Annotated[date, BeforeValidator(_iso_day)]
"""A day as JSON carries it (``format: date``): ``"2026-01-31"``, nothing else."""


@dataclass(frozen=True, slots=True)
class _Declared:
    """The URL parameters of one route: by name, how each must be spelt."""

    query: dict[str, type | None]  # name -> int/bool (spelling checked) or None (any text)
    repeatable: frozenset[str]  # list-typed query parameters
    path: dict[str, type | None]


def _scalar(annotation: Any) -> type | None:
    """``int`` or ``bool`` if the parameter is one (optional or not), else None."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    for option in options or (annotation,):
        if option is bool or option is int:
            return option
    return None


def _is_list(annotation: Any) -> bool:
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    return any(get_origin(a) in (list, set, tuple, frozenset) for a in options or (annotation,))


def _declared_by(route: APIRoute) -> _Declared:
    query: dict[str, type | None] = {}
    path: dict[str, type | None] = {}
    repeatable: set[str] = set()
    stack: list[Dependant] = [route.dependant]
    while stack:
        dependant = stack.pop()
        for field in dependant.query_params:
            annotation = field.field_info.annotation
            query[field.alias] = _scalar(annotation)
            if _is_list(annotation):
                repeatable.add(field.alias)
        for field in dependant.path_params:
            path[field.alias] = _scalar(field.field_info.annotation)
        stack.extend(dependant.dependencies)
    return _Declared(query, frozenset(repeatable), path)


def _misspelt(kind: type | None, raw: str) -> tuple[str, str] | None:
    """Why ``raw`` is not how a parameter of this type is written (error type, message), or None."""
    if kind is int and not _INTEGER.fullmatch(raw):
        return "int_parsing", "Input should be a valid integer: an optional '-' and digits only"
    if kind is bool and raw not in _BOOLEANS:
        return "bool_parsing", "Input should be a valid boolean: true or false"
    return None


def refuse_loose_parameters(request: Request) -> None:
    """422 for a query parameter the route does not take, one given twice, or a misspelt number.

    FastAPI (lax) would ignore ``?limt=5``, take the last of ``?limit=1&limit=900``
    and read ``1.0``, ``+1``, `` 1`` or ``1_0`` as integers.

    Raises:
        RequestValidationError: naming each such parameter (``loc``: query or path, name).
        RuntimeError: called for a request that no FastAPI route matched.
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        raise RuntimeError("refuse_loose_parameters is a dependency of FastAPI routes only")
    declared = _declared_by(route)
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name, raw in request.query_params.multi_items():
        loc = ("query", name)
        if name not in declared.query:
            takes = ", ".join(sorted(declared.query)) or "none"
            msg = f"Unknown query parameter (this operation takes: {takes})"
            errors.append({"type": "extra_forbidden", "loc": loc, "msg": msg, "input": raw})
        elif name in seen and name not in declared.repeatable:
            msg = "Query parameter given more than once: give it once"
            errors.append({"type": "repeated", "loc": loc, "msg": msg, "input": raw})
        elif why := _misspelt(declared.query[name], raw):
            errors.append({"type": why[0], "loc": loc, "msg": why[1], "input": raw})
        seen.add(name)
    for name, raw in request.path_params.items():
        if why := _misspelt(declared.path.get(name), raw):
            errors.append({"type": why[0], "loc": ("path", name), "msg": why[1], "input": raw})
    if errors:
        raise RequestValidationError(errors)
