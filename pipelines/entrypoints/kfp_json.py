"""JSON <-> ``kfp_server_api`` models, v2beta1 filters and list paging.

What a KFP v2beta1 API server does to its JSON, for the local endpoint
(``kfp_ct.pipelines.entrypoints.local_server``) and the tests' API double:

* responses are model objects written with their ``attribute_map`` names, unset fields
  left out (as the server's protojson marshaller does), times RFC 3339 in UTC;
* request bodies are read into model objects, refusing fields the model does not know;
* ``filter`` (a JSON ``V2beta1Filter``, or a v1beta1 ``Filter`` with ``op`` for
  ``operation``), ``sort_by`` (``"created_at desc"``), ``page_size`` and ``page_token``
  on list calls. The real server decodes the filter once more after its HTTP layer
  (``parseAPIFilter``: Go's ``url.QueryUnescape``), which :func:`parse_api_filter` does
  too (:func:`query_unescape`): the Kubeflow UI encodes its filter twice, kfp.Client once
  (so there a ``+`` becomes a space and a stray ``%`` is an error, as on the real server).

Errors are :class:`HttpError` (HTTP status, google.rpc code, message).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import urllib.parse
from typing import Any, Callable, Mapping, Optional, Union

from kfp_server_api import models as m

# google.rpc.Code values the server uses.
CODE_INVALID_ARGUMENT = 3
CODE_NOT_FOUND = 5
CODE_ALREADY_EXISTS = 6
CODE_PERMISSION_DENIED = 7
CODE_FAILED_PRECONDITION = 9
CODE_UNIMPLEMENTED = 12
CODE_INTERNAL = 13
CODE_UNAUTHENTICATED = 16

# HTTP status of each code, as grpc-gateway maps them.
HTTP_STATUS_BY_CODE = {CODE_INVALID_ARGUMENT: 400, CODE_NOT_FOUND: 404,
                       CODE_ALREADY_EXISTS: 409, CODE_PERMISSION_DENIED: 403,
                       CODE_FAILED_PRECONDITION: 400, CODE_UNIMPLEMENTED: 501,
                       CODE_INTERNAL: 500, CODE_UNAUTHENTICATED: 401}

# filter.proto Predicate.Operation numbers (kfp.Client sends the number, e.g. 1).
OPERATION_BY_NUMBER = {0: "OPERATION_UNSPECIFIED", 1: "EQUALS", 2: "NOT_EQUALS",
                       3: "GREATER_THAN", 5: "GREATER_THAN_EQUALS", 6: "LESS_THAN",
                       7: "LESS_THAN_EQUALS", 8: "IN", 9: "IS_SUBSTRING"}
_OPERATION_BY_NUMBER = OPERATION_BY_NUMBER  # the name the tests' double used
DEFAULT_PAGE_SIZE = 20

# int64 fields: the models type them "str" (protojson writes int64 as a string), but
# protojson reads a JSON number as well, and kfp.Client sends numbers there.
INT64_FIELDS = {("V2beta1RecurringRun", "max_concurrency"),
                ("V2beta1PeriodicSchedule", "interval_second"),
                ("V2beta1Predicate", "long_value")}

# A filter / sort key -> the model attribute, or a function of the item.
KeyMap = Mapping[str, Union[str, Callable[[Any], Any]]]


class HttpError(Exception):
    """An error answer: HTTP status, google.rpc code and message.

    Args:
        status: HTTP status (400, 404...).
        code: google.rpc code (3, 5...).
        message: What went wrong, for people.
    """

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def of(cls, code: int, message: str) -> "HttpError":
        """An error with the HTTP status that goes with the google.rpc ``code``."""
        return cls(HTTP_STATUS_BY_CODE.get(code, 500), code, message)

    def payload(self) -> dict:
        """The body the server answers: ``{"error", "code", "message", "details"}``."""
        return {"error": self.message, "code": self.code, "message": self.message,
                "details": []}


_HttpError = HttpError  # the name the tests' double used


def invalid(message: str) -> HttpError:
    """A 400 InvalidArgument error, worded as the server words them."""
    return HttpError(400, CODE_INVALID_ARGUMENT, f"Invalid input error: {message}")


# ---------------------------------------------------------------- model <-> JSON


def is_model(value: Any) -> bool:
    """Whether ``value`` is a kfp_server_api model object."""
    return hasattr(value, "attribute_map") and hasattr(value, "openapi_types")


def format_time(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; fractional seconds only when there are some."""
    utc = value.astimezone(dt.timezone.utc) if value.tzinfo else value
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def to_json(value: Any) -> Any:
    """Serializes a kfp_server_api model (recursively) with its attribute_map names.

    None fields are left out, as the server's protojson marshaller leaves out unset
    fields; datetimes are RFC 3339 in UTC with a ``Z``.
    """
    if is_model(value):
        out = {}
        for attr, json_name in value.attribute_map.items():
            field = getattr(value, attr)
            if field is None or field == [] or field == {}:
                continue
            out[json_name] = to_json(field)
        return out
    if isinstance(value, dt.datetime):
        return format_time(value)
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def model_class(type_name: str) -> Optional[type]:
    """The kfp_server_api model class of an ``openapi_types`` name, or None."""
    cls = getattr(m, type_name, None)
    return cls if isinstance(cls, type) else None


_model_class = model_class


def from_json(data: Any, cls: type, where: str) -> Any:
    """Reads a JSON object into a kfp_server_api model, refusing unknown fields.

    Args:
        data: The parsed JSON.
        cls: The model class (e.g. ``m.V2beta1Run``).
        where: Field path for messages ("run").

    Returns:
        An instance of ``cls``.

    Raises:
        HttpError: 400 when the JSON does not fit the model.
    """
    if not isinstance(data, dict):
        raise invalid(f"{where} must be a JSON object")
    by_json_name = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    kwargs = {}
    for key, value in data.items():
        attr = by_json_name.get(key) or by_json_name.get(snake(key))
        if attr is None:
            raise invalid(f'unknown field "{key}" in {where} ({cls.__name__})')
        type_name = cls.openapi_types[attr]
        if (cls.__name__, attr) in INT64_FIELDS:
            kwargs[attr] = _read_int64(value, f"{where}.{key}")
        else:
            kwargs[attr] = _read_field(value, type_name, f"{where}.{key}")
    return cls(**kwargs)


def snake(name: str) -> str:
    """``lowerCamel`` -> ``lower_camel`` (protojson accepts both spellings)."""
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


_snake = snake


def _read_int64(value: Any, where: str) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise invalid(f"{where} must be an integer (a JSON number or a string of digits), "
                      f"got {type(value).__name__}")
    text = str(value).strip()
    if not re.fullmatch(r"-?\d+", text):
        raise invalid(f"{where} must be an integer, got {value!r}")
    return str(int(text))


def _read_field(value: Any, type_name: str, where: str) -> Any:
    if value is None:
        return None
    bad = invalid(f"{where} must be {type_name}, got {type(value).__name__}")
    if type_name == "str":
        if not isinstance(value, str):
            raise bad
        return value
    if type_name == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if type_name == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise bad
        try:
            return int(value)
        except ValueError:
            raise bad from None
    if type_name == "datetime":
        if not isinstance(value, str):
            raise bad
        try:
            when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise invalid(f"{where}: {value!r} is not an RFC 3339 time, e.g. "
                          "2026-12-01T03:00:00Z") from None
        return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    if type_name == "object":
        return value
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            raise invalid(f"{where} must be a JSON object, got {type(value).__name__}")
        return value
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise bad
        inner = type_name[5:-1]
        return [_read_field(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    cls = model_class(type_name)
    if cls is None:
        return value
    allowed = getattr(cls, "allowable_values", None)
    if allowed is not None and not cls.attribute_map:  # an enum
        if value not in allowed:
            raise invalid(f"{where}: {value!r} is not one of {allowed}")
        return value
    return from_json(value, cls, where)


# ------------------------------------------------------------- filters and paging


class QueryUnescapeError(ValueError):
    """A bad ``%`` escape; its text is Go's ``url.EscapeError``: ``invalid URL escape "%zz"``."""

    def __init__(self, escape: str) -> None:
        super().__init__(f"invalid URL escape {go_quote(escape)}")
        self.escape = escape


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def query_unescape(text: str) -> str:
    """Go's ``url.QueryUnescape``: ``%XX`` decoded, ``+`` made a space.

    As Go does, every ``%`` is checked before anything is decoded (Python's
    ``unquote_plus`` keeps a bad escape as it is); the decoded bytes are read as UTF-8 (a
    bad sequence becomes U+FFFD).

    Raises:
        QueryUnescapeError: a ``%`` not followed by two hex digits; its message is Go's
            (``invalid URL escape "%zz"``: the ``%`` and at most two bytes after it).
    """
    raw = text.encode("utf-8", "surrogateescape")
    bad = _BAD_ESCAPE.search(raw)
    if bad is not None:
        raise QueryUnescapeError(raw[bad.start():bad.start() + 3].decode("utf-8", "replace"))
    return urllib.parse.unquote_plus(text, errors="replace")


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
               "\t": "\\t", "\v": "\\v"}


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote`` (what ``%q`` writes): double quotes, printable characters
    kept, ``\\n``-style escapes, else ``\\xNN`` / ``\\uNNNN`` / ``\\UNNNNNNNN``."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and not 0xD800 <= code <= 0xDFFF:
            out.append(char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _filter_predicates(data: Any, api_version: str) -> list:
    """The predicates of a parsed filter JSON (v2beta1 ``operation``, v1beta1 ``op``).

    Raises:
        HttpError: 400 when it is not a filter.
    """
    if isinstance(data, dict):
        for pred in data.get("predicates") or []:
            if not isinstance(pred, dict):
                continue
            if api_version == "v1beta1" and "op" in pred:  # v1beta1 Predicate.op
                if "operation" in pred:
                    raise invalid('unknown field "operation" in filter.predicates '
                                  "(a v1beta1 predicate has op)")
                pred["operation"] = pred.pop("op")
                if pred["operation"] in ("UNKNOWN", 0):
                    pred["operation"] = "OPERATION_UNSPECIFIED"
            # protojson accepts enum numbers: name them for the model
            if isinstance(pred.get("operation"), int):
                pred["operation"] = OPERATION_BY_NUMBER.get(pred["operation"],
                                                            str(pred["operation"]))
    parsed = from_json(data, m.V2beta1Filter, "filter")
    return list(parsed.predicates or [])


def parse_api_filter(encoded: str, api_version: str = "v2beta1") -> list:
    """The real server's ``parseAPIFilter``: the filter as the HTTP layer decoded it,
    unescaped once more (:func:`query_unescape`), then read as a filter JSON.

    Raises:
        HttpError: 400 ``Invalid input error: failed to parse valid filter from "<the
            filter as received>": <why>`` (Go's words; for a bad escape
            ``invalid URL escape "%zz"``).
    """
    if not encoded:
        return []
    where = f"failed to parse valid filter from {go_quote(encoded)}"
    try:
        data = json.loads(query_unescape(encoded))
    except QueryUnescapeError as exc:
        raise invalid(f"{where}: {exc}") from None
    except ValueError as exc:
        raise invalid(f"{where}: {exc}") from None
    try:
        return _filter_predicates(data, api_version)
    except HttpError as err:
        raise invalid(f"{where}: {err.message.removeprefix('Invalid input error: ')}"
                      ) from None


def _value_of(item: Any, key: Union[str, Callable[[Any], Any]]) -> Any:
    return key(item) if callable(key) else getattr(item, key)


def _comparable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return value


def _predicate_test(pred: Any) -> Callable[[Any], bool]:
    op = pred.operation
    if op == "IN":
        values: list = []
        for holder, field in ((pred.string_values, "values"), (pred.int_values, "values"),
                              (pred.long_values, "values")):
            if holder is not None:
                values += list(getattr(holder, field) or [])
        shown = {str(v) for v in values}
        return lambda v: v is not None and str(v) in shown
    if pred.timestamp_value is not None:
        wanted: Any = pred.timestamp_value.timestamp()
    elif pred.int_value is not None:
        wanted = pred.int_value
    elif pred.long_value is not None:
        wanted = int(pred.long_value)
    else:
        wanted = pred.string_value

    def cast(v: Any) -> Any:
        v = _comparable(v)
        if isinstance(wanted, (int, float)) and isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return v
        return v

    if op == "EQUALS":
        return lambda v: cast(v) == wanted
    if op == "NOT_EQUALS":
        return lambda v: cast(v) != wanted
    if op == "IS_SUBSTRING":
        return lambda v: wanted is not None and str(wanted) in str(v or "")
    compare = {"GREATER_THAN": lambda a, b: a > b, "GREATER_THAN_EQUALS": lambda a, b: a >= b,
               "LESS_THAN": lambda a, b: a < b, "LESS_THAN_EQUALS": lambda a, b: a <= b}
    if op not in compare:
        raise invalid(f"filter operation {op} is not supported")

    def test(v: Any) -> bool:
        v = cast(v)
        if v is None or wanted is None:
            return False
        try:
            return compare[op](v, wanted)
        except TypeError:
            return False

    return test


def list_page(items: list, query: Mapping, keys: KeyMap,
              api_version: str = "v2beta1") -> tuple:
    """Applies filter, sort_by, page_size and page_token as the server does.

    Args:
        items: Model objects, in the server's default order.
        query: The request's query parameters.
        keys: Filter / sort keys the resource allows -> attribute name (or a function).
        api_version: "v2beta1" or "v1beta1": the filter is read as the real server reads
            it (:func:`parse_api_filter`: unescaped once more; v1beta1 predicates have
            ``op``).

    Returns:
        ``(page, next_page_token, total_size)``; the token is "" on the last page.

    Raises:
        HttpError: 400 for a bad filter, sort key, page size or page token.
    """
    if query.get("filter"):
        predicates = parse_api_filter(query["filter"], api_version)
        for pred in predicates:
            key = keys.get(pred.key)
            if key is None:
                raise invalid(f"unsupported filter key {pred.key!r}; supported: "
                              f"{', '.join(sorted(keys))}")
            test = _predicate_test(pred)
            items = [i for i in items if test(_value_of(i, key))]
    sort_by = (query.get("sort_by") or "").strip()
    if sort_by:
        parts = sort_by.split()
        key = keys.get(parts[0])
        if key is None or len(parts) > 2 or (len(parts) == 2 and parts[1] not in
                                             ("asc", "desc")):
            raise invalid(f"invalid sorting field {sort_by!r}; use '<field> [asc|desc]' "
                          f"with a field of {', '.join(sorted(keys))}")

        def sort_key(item: Any, key: Any = key) -> tuple:
            value = _comparable(_value_of(item, key))
            return (value is not None, value if value is not None else 0)

        items = sorted(items, key=sort_key, reverse=len(parts) == 2 and parts[1] == "desc")
    try:
        page_size = int(query.get("page_size") or 0) or DEFAULT_PAGE_SIZE
        offset = 0
        if query.get("page_token"):
            offset = int(json.loads(base64.urlsafe_b64decode(query["page_token"]))["offset"])
    except (ValueError, KeyError, TypeError):
        raise invalid("invalid page_size or page_token") from None
    if page_size < 0:
        raise invalid("page_size must not be negative")
    page = items[offset:offset + page_size]
    next_token = ""
    if offset + page_size < len(items):
        next_token = base64.urlsafe_b64encode(
            json.dumps({"offset": offset + page_size}).encode()).decode()
    return page, next_token, len(items)


_list = list_page

__all__ = ["CODE_ALREADY_EXISTS", "CODE_FAILED_PRECONDITION", "CODE_INTERNAL",
           "CODE_INVALID_ARGUMENT", "CODE_NOT_FOUND", "CODE_PERMISSION_DENIED",
           "CODE_UNAUTHENTICATED", "CODE_UNIMPLEMENTED", "DEFAULT_PAGE_SIZE",
           "HTTP_STATUS_BY_CODE", "HttpError", "OPERATION_BY_NUMBER", "QueryUnescapeError",
           "format_time", "from_json", "go_quote", "invalid", "is_model", "list_page",
           "model_class", "parse_api_filter", "query_unescape", "snake",
           "to_json"]
