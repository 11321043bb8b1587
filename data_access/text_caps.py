"""What a page may draw of a user's text or a raw payload: at most `MAX_SHOWN_CHARS` characters and, for JSON,
`MAX_SHOWN_DEPTH` levels of nesting, pretty-printed within those limits. The full value is offered as a download.

Inference tables hold whatever clients sent: one payload 200,000 levels deep or several hundred KB long froze a
viewer's browser for minutes when drawn whole (and a recursive parser would overflow on the first). JSON is read
here by a flat scan over its tokens, never recursively, so any depth costs one pass; a value within the limits is
pretty-printed exactly as `json.dumps(indent=2)` would.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

MAX_SHOWN_CHARS = 20_000  # characters of any one text or payload drawn on a page
MAX_SHOWN_DEPTH = 20  # levels of JSON nesting drawn; deeper levels are shown as …
MAX_SCANNED_CHARS = 2_000_000  # a payload longer than this is pretty-printed from its first part only
ELIDED = "…"

# One JSON token: a string (escapes kept), a bracket or separator, or a bare scalar (number, true, false, null, junk).
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[{}\[\],:]|[^\s{}\[\],:"]+', re.DOTALL)
_CLOSES = {"{": "}", "[": "]"}


@dataclass(frozen=True)
class Shown:
    """What to draw (`text`, highlighted as `language`), what was left out (`note`, empty when nothing was), and
    the full size, for the download that carries everything."""

    text: str
    language: str | None
    note: str
    full_chars: int

    @property
    def cut(self) -> bool:
        return bool(self.note)


def shown_text(text: str | None, limit: int = MAX_SHOWN_CHARS) -> Shown:
    """A plain text, cut at `limit` characters."""
    if text is None:
        return Shown("(none)", None, "", 0)
    if len(text) <= limit:
        return Shown(text, None, "", len(text))
    return Shown(text[:limit] + ELIDED, None, _cut_note(limit, len(text)), len(text))


def shown_json(text: str | None, limit: int = MAX_SHOWN_CHARS, max_depth: int = MAX_SHOWN_DEPTH) -> Shown:
    """A JSON text pretty-printed within `limit` characters and `max_depth` levels; text that is not JSON is shown
    as plain text, with the same cap."""
    if text is None:
        return Shown("(null)", None, "", 0)
    depth, _ = _depth_and_tokens(text[:MAX_SCANNED_CHARS])
    if depth <= max_depth and len(text) <= MAX_SCANNED_CHARS:
        try:
            pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            return shown_text(text, limit)
        if len(pretty) <= limit:
            return Shown(pretty, "json", "", len(text))
    pretty, elided = _pretty_tokens(text[:MAX_SCANNED_CHARS], limit, max_depth)
    notes = []
    if elided:
        notes.append(f"nesting deeper than {max_depth} levels is shown as {ELIDED} (this payload is {depth:,} deep)")
    if len(pretty) > limit or len(text) > MAX_SCANNED_CHARS:
        pretty = pretty[:limit] + ELIDED
        notes.append(_cut_note(limit, len(text)))
    return Shown(pretty, "json", "; ".join(notes), len(text))


def _cut_note(limit: int, total: int) -> str:
    return f"showing the first {limit:,} of {total:,} characters"


def _depth_and_tokens(text: str) -> tuple[int, int]:
    """The deepest bracket nesting in `text` and its token count, in one flat pass."""
    depth = deepest = count = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        count += 1
        if token in _CLOSES:
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("}", "]"):
            depth = max(depth - 1, 0)
    return deepest, count


def _pretty_tokens(text: str, limit: int, max_depth: int) -> tuple[str, bool]:
    """Indent `text` token by token as json.dumps(indent=2) would, eliding what lies deeper than `max_depth`;
    stops once the output passes `limit`. Returns the text and whether anything was elided."""
    out: list[str] = []
    size = 0
    depth = 0
    elided = False
    skip_from: int | None = None  # the depth whose contents are being skipped
    just_opened = False
    for match in _TOKEN.finditer(text):
        token = match.group()
        if skip_from is not None:
            if token in _CLOSES:
                depth += 1
            elif token in ("}", "]"):
                depth -= 1
                if depth == skip_from:
                    skip_from = None
                    piece = ELIDED + token
                    out.append(piece)
                    size += len(piece)
            continue
        if just_opened and token not in ("}", "]"):
            piece = "\n" + "  " * depth
            out.append(piece)
            size += len(piece)
        just_opened = False
        if token in _CLOSES:
            if depth >= max_depth:
                out.append(token)
                size += 1
                elided = True
                skip_from = depth
                depth += 1
                continue
            piece = token
            depth += 1
            just_opened = True
        elif token in ("}", "]"):
            depth = max(depth - 1, 0)
            previous = out[-1] if out else ""
            piece = token if previous in _CLOSES else "\n" + "  " * depth + token
        elif token == ",":
            piece = ",\n" + "  " * depth
        elif token == ":":
            piece = ": "
        else:
            piece = token
        out.append(piece)
        size += len(piece)
        if size > limit:
            break
    return "".join(out), elided
