"""The scalar fields of a payload row: ids, times, status, metadata, sizes and the JSON texts, each checked and
coerced, with a short reason for whatever cannot be understood."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from data_access.schema import GATEWAY_PAYLOAD_ARROW

_EPOCH = dt.datetime(1970, 1, 1)
_ONE_MS = dt.timedelta(milliseconds=1)
_MIN_MS = -((_EPOCH - dt.datetime.min) // _ONE_MS)
_MAX_MS = (dt.datetime.max - _EPOCH) // _ONE_MS
# strict=False accepts raw control characters (NUL, newlines) in strings: keep the text, not lose it.
_DECODER = json.JSONDecoder(strict=False)
_METADATA_KEYS = ("endpoint_name", "model_name", "model_version")


# ---------------------------------------------------------------------------------------------------------
# Scalar fields
# ---------------------------------------------------------------------------------------------------------


def _clean_text(text: str) -> str:
    """`text` as Arrow can store it: lone surrogates become U+FFFD, valid surrogate pairs are joined."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _utf8_size(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(_clean_text(text).encode("utf-8"))


def _id_text(value: Any) -> str | None:
    """A request id as text: strings and integers only, empty means missing."""
    if isinstance(value, str):
        return _clean_text(value) if value else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _row_digest(raw: tuple[Any, ...]) -> str:
    """A stable id from the row's raw fields: "sha1:" + SHA-1 hex digest of a canonical JSON.

    The canonical form is `json.dumps` (ASCII, default separators) of the ten raw fields in `PAYLOAD_ARROW`
    order, with the date as ISO text and the metadata map as [key, value] pairs sorted by key.
    """
    try:
        fields = list(raw)
        fields[2] = fields[2].isoformat() if isinstance(fields[2], dt.date) else fields[2]
        pairs = _metadata_pairs(fields[9])
        if pairs is not None:  # dict and pair-list forms of the same map hash alike
            fields[9] = sorted(([str(key), value] for key, value in pairs), key=lambda pair: pair[0])
        canonical = json.dumps(fields, ensure_ascii=True, default=repr)
    except Exception:  # unprintable garbage: still a stable id, from the field types
        canonical = repr([type(field).__name__ for field in raw])
    return "sha1:" + hashlib.sha1(canonical.encode("ascii"), usedforsecurity=False).hexdigest()


def _gateway_digest(raw: tuple[Any, ...]) -> str:
    """A stable id for a gateway row without ids: "sha1:" + SHA-1 of the canonical JSON of its logged fields.

    Canonical form: `json.dumps` (ASCII, default separators) of the twelve `GATEWAY_PAYLOAD_SCHEMA` fields in
    order, dates and times as ISO text (times as naive UTC). The joined served-entity fields are not part of it.
    """
    try:
        fields = [
            _naive_utc(field).isoformat() if isinstance(field, dt.date) else field
            for field in raw[: len(GATEWAY_PAYLOAD_ARROW)]
        ]
        canonical = json.dumps(fields, ensure_ascii=True, default=repr)
    except Exception:  # unprintable garbage: still a stable id, from the field types
        canonical = repr([type(field).__name__ for field in raw])
    return "sha1:" + hashlib.sha1(canonical.encode("ascii"), usedforsecurity=False).hexdigest()


def _naive_utc(value: dt.date) -> dt.date:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _gateway_time(value: Any, errors: list[str]) -> dt.datetime | None:
    """Naive UTC time of a gateway `request_time` (a timestamp; engines may hand it over with a time zone)."""
    if isinstance(value, dt.datetime):
        return _naive_utc(value)  # type: ignore[return-value]
    if value is None:
        errors.append("timestamp: missing")
        return None
    if isinstance(value, str):
        try:
            return _naive_utc(dt.datetime.fromisoformat(value))  # type: ignore[return-value]
        except ValueError:
            pass
    errors.append("timestamp: invalid value")
    return None


def _logging_codes(value: Any, errors: list[str]) -> str | None:
    """`logging_error_codes` as ", "-joined text; None when the payload was logged whole (null or empty list)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        errors.append("logging_error_codes: invalid value")
        return None
    codes = [_clean_text(code) for code in value if isinstance(code, str) and code]
    return ", ".join(codes) if codes else None


def _coerce_int(value: Any) -> int | None:
    """An integer from int, integral float or numeric text; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and len(value) < 40:
        try:
            return int(value)
        except ValueError:
            return _coerce_int(_coerce_float(value))
    return None


def _coerce_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, str) and len(value) < 40:
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _checked_int(value: Any, bounds: tuple[int, int], name: str, errors: list[str]) -> int | None:
    if value is None:
        return None
    number = _coerce_int(value)
    if number is None or not bounds[0] <= number <= bounds[1]:
        errors.append(f"{name}: invalid value")
        return None
    return number


def _checked_float(value: Any, name: str, errors: list[str]) -> float | None:
    if value is None:
        return None
    number = _coerce_float(value)
    if number is None or not math.isfinite(number):
        errors.append(f"{name}: invalid value")
        return None
    return number


def _request_time(timestamp_ms: Any, errors: list[str]) -> dt.datetime | None:
    """Naive UTC time of `timestamp_ms` (milliseconds since the Unix epoch)."""
    if timestamp_ms is None:
        errors.append("timestamp: missing")
        return None
    millis = _coerce_int(timestamp_ms)
    if millis is None:
        errors.append("timestamp: invalid value")
        return None
    if not _MIN_MS <= millis <= _MAX_MS:
        errors.append("timestamp: out of range")
        return None
    return _EPOCH + dt.timedelta(milliseconds=millis)


def _day(value: Any, request_time: dt.datetime | None, errors: list[str]) -> dt.date | None:
    """The `date` column when usable, else the day of the request time."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    if value is not None:
        errors.append("date: invalid value")
    return request_time.date() if request_time is not None else None


def _metadata_pairs(value: Any) -> list[tuple[Any, Any]] | None:
    """(key, value) pairs of a map given as a dict or a list of pairs; None when it is neither."""
    if isinstance(value, Mapping):
        return list(value.items())
    if isinstance(value, list | tuple):
        pairs = []
        for item in value:
            if isinstance(item, list | tuple) and len(item) == 2:
                pairs.append((item[0], item[1]))
            elif isinstance(item, Mapping) and "key" in item:
                pairs.append((item.get("key"), item.get("value")))
            else:
                return None
        return pairs
    return None


def _metadata(value: Any, errors: list[str]) -> dict[str, str]:
    """The metadata keys we use, as text (integers are stringified, other values ignored)."""
    if value is None:
        errors.append("metadata: missing")
        return {}
    pairs = _metadata_pairs(value)
    if pairs is None:
        errors.append("metadata: not a map")
        return {}
    found: dict[str, str] = {}
    for key, item in pairs:
        if key in _METADATA_KEYS:
            text = _id_text(item)
            if text is not None:
                found[key] = text
    errors.extend(f"metadata: missing {key}" for key in _METADATA_KEYS if key not in found)
    return found


def _raw_text(value: Any, side: str, errors: list[str], report_missing: bool = True) -> tuple[str | None, int]:
    """A raw request/response as text plus its UTF-8 size; bytes are decoded, other types rejected."""
    if value is None:
        if report_missing:
            errors.append(f"{side}: missing")
        return None, 0
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace"), len(value)
    if not isinstance(value, str):
        errors.append(f"{side}: not a string")
        return None, 0
    if value.isascii():
        return value, len(value)
    text = _clean_text(value)
    return text, len(text.encode("utf-8"))


def _decode_json(text: str, side: str, errors: list[str]) -> tuple[Any, bool]:
    """(decoded value, ok). Errors are recorded as short reasons, never raised."""
    try:
        return _DECODER.decode(text), True
    except json.JSONDecodeError as exc:
        errors.append(f"{side}: invalid JSON ({exc.msg} at char {exc.pos})")
    except RecursionError:
        errors.append(f"{side}: invalid JSON (nested too deeply)")
    except ValueError:  # an integer literal beyond Python's digit limit
        errors.append(f"{side}: invalid JSON (number too long)")
    return None, False
