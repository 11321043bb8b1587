"""How model versions are named and ordered on every page."""

from __future__ import annotations


def version_label(version: object) -> str:
    """ "v7", or "unknown version" for requests whose metadata named none."""
    return f"v{version}" if version is not None and str(version) != "nan" else "unknown version"


def version_sort_key(version: str) -> tuple[int, float | str]:
    """Numeric versions in numeric order (6 < 7 < 10), anything else after them alphabetically."""
    try:
        return (0, float(version))
    except ValueError:
        return (1, version)
