"""Pure helpers for the Model registry page: registry data in, display frames and a Plotly chart out.

No Streamlit and no I/O here: the page's cached access lives in `ui.registry_data`. Versions are registry
integers; the inference table calls them strings ("6"), so the inference helpers take strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from core.versions import version_label

SERVING_ALIAS = "champion"
PREVIOUS_ALIAS = "previous"
CHANGE_SECTIONS = (
    "model",
    "signature input",
    "signature output",
    "signature params",
    "parameter",
    "metric",
    "requirement",
)
OUTCOME_ICONS = {"success": "✅", "refused": "⛔", "failed": "❌", "unreadable": "⚠️"}
BETTER, WORSE, UNCLEAR = "#54A24B", "#E45756", "#BAB0AC"

# --------------------------------------------------------------------------------------------- versions


def aliases_text(aliases: Sequence[str] | None, serving_alias: str = SERVING_ALIAS) -> str:
    """'⭐ champion, previous': the serving alias first and starred, the rest in order."""
    names = list(aliases or [])
    ordered = [name for name in names if name == serving_alias] + [name for name in names if name != serving_alias]
    return ", ".join(f"⭐ {name}" if name == serving_alias else name for name in ordered)


def versions_display(versions: pd.DataFrame, serving_alias: str = SERVING_ALIAS) -> pd.DataFrame:
    """The versions table as shown and downloaded: aliases as text, a `serving` flag for the highlighted row."""
    shown = versions.copy()
    shown["serving"] = [serving_alias in (aliases or []) for aliases in shown["aliases"]]
    shown["aliases"] = [aliases_text(aliases, serving_alias) for aliases in shown["aliases"]]
    columns = ["version", "status", "created", "updated", "aliases", "run_name", "run_id", "source", "description"]
    return shown[[*columns, "serving"]]


def highlight_serving(frame: pd.DataFrame, colour: str = "#FDE7CF") -> Any:
    """A Styler that paints the row the serving alias points to (the `serving` column marks it)."""
    marked = frame["serving"].tolist()

    def paint(row: pd.Series) -> list[str]:
        style = f"background-color: {colour}; font-weight: 600" if marked[row.name] else ""
        return [style] * len(row)

    return frame.reset_index(drop=True).style.apply(paint, axis=1)


def alias_target(versions: pd.DataFrame, alias: str) -> int | None:
    """The version an alias points to, from the versions table; None when no version carries it."""
    for version, aliases in zip(versions["version"], versions["aliases"], strict=True):
        if alias in (aliases or []):
            return int(version)
    return None


def default_pair(
    versions: pd.DataFrame, serving_alias: str = SERVING_ALIAS, previous_alias: str = PREVIOUS_ALIAS
) -> tuple[int, int] | None:
    """(older, newer) to compare first: `previous` vs `champion`, else the version before champion, else the
    two newest. None when the model has fewer than two versions."""
    numbers = sorted((int(v) for v in versions["version"]), reverse=True)
    if len(numbers) < 2:
        return None
    serving = alias_target(versions, serving_alias)
    if serving is None:
        return numbers[1], numbers[0]
    previous = alias_target(versions, previous_alias)
    if previous is not None and previous != serving:
        return previous, serving
    earlier = [n for n in numbers if n < serving]
    if earlier:
        return earlier[0], serving
    return next(n for n in numbers if n != serving), serving


def rollback_targets(versions: pd.DataFrame, current: int | None) -> list[int]:
    """READY versions earlier than the one serving now, newest first (what a rollback may move to)."""
    if current is None:
        return []
    ready = versions[(versions["status"].astype(str) == "READY") & (versions["version"].astype(int) < current)]
    return sorted((int(v) for v in ready["version"]), reverse=True)


def default_rollback_target(targets: Sequence[int], versions: pd.DataFrame) -> int | None:
    """The `previous` alias when it is a valid target, else the newest earlier version."""
    if not targets:
        return None
    previous = alias_target(versions, PREVIOUS_ALIAS)
    return previous if previous in targets else targets[0]


# ---------------------------------------------------------------------------------------- one version


def flavors_frame(flavors: Mapping[str, Any]) -> pd.DataFrame:
    """One row per flavor setting (nested settings as dotted names), readable and free of build-machine paths.

    An artifact's local `uri` (e.g. the temp folder the demo build logged it from) says nothing about the model and
    leaks the build machine's layout, so it is dropped; any other absolute path shows only its file name.
    """
    rows = []
    for name, spec in sorted(flavors.items()):
        settings = _flat_settings(spec) if isinstance(spec, Mapping) else []
        rows += [{"flavor": name, "setting": key, "value": value} for key, value in settings]
        if not settings:
            rows.append({"flavor": name, "setting": "", "value": ""})
    return pd.DataFrame(rows, columns=["flavor", "setting", "value"])


def _flat_settings(spec: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    settings: list[tuple[str, str]] = []
    for key, value in sorted(spec.items(), key=lambda item: str(item[0])):
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            settings += _flat_settings(value, f"{name}.")
        elif value is None or (prefix.startswith("artifacts.") and key == "uri" and _is_local_path(value)):
            continue
        else:
            text = _text(value)
            settings.append((name, re.split(r"[\\/]", text)[-1] if _is_local_path(text) else text))
    return settings


def _is_local_path(value: object) -> bool:
    """An absolute file-system path or file: URI (POSIX or Windows), as opposed to a path inside the model."""
    text = str(value)
    return text.startswith(("/", "file:", "\\")) or (len(text) > 2 and text[1] == ":" and text[2] in "\\/")


def requirements_frame(lines: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"requirement": list(lines)}, dtype=object)


def mapping_frame(values: Mapping[str, Any], value_name: str) -> pd.DataFrame:
    """A name/value table of run parameters (text) or metrics (numbers), sorted by name."""
    items = sorted(values.items())
    return pd.DataFrame({"name": [k for k, _ in items], value_name: [v for _, v in items]})


def human_size(size: object) -> str:
    if size is None or size is pd.NA or (isinstance(size, float) and math.isnan(size)):
        return ""
    value = float(size)  # type: ignore[arg-type]
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return ""  # unreachable


def artifact_tree_display(artifacts: pd.DataFrame) -> pd.DataFrame:
    """The artifact listing as an indented tree with readable sizes (folders add up their files)."""
    names = [
        "\u2003" * int(depth) + ("📁 " if is_dir else "📄 ") + str(path).rstrip("/").rsplit("/", 1)[-1]
        for path, is_dir, depth in zip(artifacts["path"], artifacts["is_dir"], artifacts["depth"], strict=True)
    ]
    return pd.DataFrame(
        {
            "tree": names,
            "size": [human_size(s) for s in artifacts["size_bytes"]],
            "size_bytes": artifacts["size_bytes"],
            "path": artifacts["path"],
        }
    )


# ----------------------------------------------------------------------------------------- comparison


def _text(value: object) -> str:
    """A changed value as text; numbers with up to 6 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns as text, so values of mixed types (signature defaults, shapes) display as one column."""
    return frame.assign(**{c: [_text(v) for v in frame[c]] for c in frame.columns if frame[c].dtype == object})


def changes_display(changes: pd.DataFrame) -> pd.DataFrame:
    """The registry differences as text (mixed types do not fit one column), with the numeric difference
    and relative change where both sides are numbers (metrics, numeric parameters)."""
    olds = [_number(v) for v in changes["old"]]
    news = [_number(v) for v in changes["new"]]
    differences = [n - o if o is not None and n is not None else None for o, n in zip(olds, news, strict=True)]
    relative = [
        None if d is None or o is None or o == 0 else _relative(d, o) for d, o in zip(differences, olds, strict=True)
    ]
    return pd.DataFrame(
        {
            "section": changes["section"].astype(str),
            "item": changes["item"].astype(str),
            "change": changes["change"].astype(str),
            "old": [_text(v) for v in changes["old"]],
            "new": [_text(v) for v in changes["new"]],
            "difference": pd.array(differences, dtype="Float64"),
            "relative_change": pd.array(relative, dtype="Float64"),
        }
    )


def change_summary(changes: pd.DataFrame) -> pd.DataFrame:
    """Per section (all of them, unchanged ones too): how many items were added, removed and changed."""
    counts = changes.groupby(["section", "change"]).size().unstack(fill_value=0) if len(changes) else None
    rows = []
    sections = list(CHANGE_SECTIONS) + sorted(set(changes["section"]) - set(CHANGE_SECTIONS))
    for section in sections:
        found = {kind: 0 for kind in ("added", "removed", "changed")}
        if counts is not None and section in counts.index:
            found |= {kind: int(counts.loc[section].get(kind, 0)) for kind in found}
        total = sum(found.values())
        rows.append({"section": section, **found, "summary": "unchanged" if total == 0 else f"{total} difference(s)"})
    return pd.DataFrame(rows, columns=["section", "added", "removed", "changed", "summary"])


# ----------------------------------------------------------------------------------- inference deltas


def versions_without_traffic(totals: pd.DataFrame, versions: Sequence[str]) -> list[str]:
    served = set(totals.loc[totals["requests"] > 0, "model_version"].dropna().astype(str))
    return [v for v in versions if v not in served]


FIGURES = (  # version_table column, label, unit
    ("requests", "Requests", "requests"),
    ("error_rate", "Error rate", "share"),
    ("latency_p50", "Latency p50", "ms"),
    ("latency_p95", "Latency p95", "ms"),
    ("tokens_per_request", "Tokens per request", "tokens"),
    ("completion_tokens_mean", "Completion tokens (mean)", "tokens"),
    ("fk_mean", "Flesch-Kincaid grade (mean)", "US school grade"),
    ("fk_median", "Flesch-Kincaid grade (median)", "US school grade"),
    ("toxicity_rate", "Flagged responses (toxicity scorer, rate at threshold)", "share"),
    ("perplexity_mean", "Response perplexity (mean)", "perplexity"),
    ("perplexity_median", "Response perplexity (median)", "perplexity"),
)


def figures_side_by_side(version_table: pd.DataFrame, old: str, new: str) -> pd.DataFrame:
    """Each version's figure (`core.comparison.version_table`, indexed by version) next to the other, with the
    difference new - old."""
    rows = []
    for column, label, unit in FIGURES:
        before = float(version_table.loc[old, column]) if old in version_table.index else math.nan
        after = float(version_table.loc[new, column]) if new in version_table.index else math.nan
        rows.append(
            {
                "figure": label,
                "unit": unit,
                version_label(old): before,
                version_label(new): after,
                "difference": after - before,
                "relative_change": _relative(after - before, before),
            }
        )
    return pd.DataFrame(rows)


def _relative(difference: float, baseline: float) -> float:
    """difference / |baseline|; NaN when the baseline is missing or zero."""
    if baseline != baseline or baseline == 0 or difference != difference:
        return math.nan
    return difference / abs(baseline)


def inference_deltas(tests: pd.DataFrame, old: str, new: str) -> pd.DataFrame:
    """The Overview page's tests (`core.comparison.compare_versions`) as the comparison shows them: both values, the
    difference, the relative change, the Holm-adjusted p-value, the effect size and the verdict."""
    baseline = tests["baseline"].astype(float)
    relative = [_relative(d, b) for d, b in zip(tests["difference"].astype(float), baseline, strict=True)]
    return pd.DataFrame(
        {
            "measure": tests["measure"],
            "key": tests["key"],
            "scorer": tests["scorer"],
            version_label(old): baseline,
            version_label(new): tests["comparison"].astype(float),
            "difference": tests["difference"].astype(float),
            "relative_change": relative,
            "test": tests["test"],
            "p_holm": tests["p_holm"].astype(float),
            "effect": tests["effect"].astype(float),
            "effect_size": tests["effect_size"],
            "verdict": tests["verdict"],
            f"n {version_label(old)}": tests["n_baseline"],
            f"n {version_label(new)}": tests["n_comparison"],
            "note": tests["note"],
        }
    )


def _delta_colour(difference: float, verdict: str, lower_is_better: bool = True) -> str:
    if difference != difference or not str(verdict).startswith("significant"):
        return UNCLEAR
    improved = difference < 0 if lower_is_better else difference > 0
    return BETTER if improved else WORSE


def delta_chart(deltas: pd.DataFrame, old: str, new: str) -> go.Figure:
    """Relative change of each measure from `old` to `new`: green better, red worse, grey not significant
    (Holm-adjusted) or negligible. Every measure here is better when lower."""
    shown = deltas[deltas["relative_change"].notna()].iloc[::-1]
    colours = [
        _delta_colour(d, v) if not str(v).startswith("real but") else UNCLEAR
        for d, v in zip(shown["difference"], shown["verdict"], strict=True)
    ]
    fig = go.Figure(
        go.Bar(
            x=shown["relative_change"] * 100,
            y=shown["measure"],
            orientation="h",
            marker_color=colours,
            customdata=shown[["verdict", "p_holm"]].to_numpy(),
            hovertemplate="%{y}: %{x:+.1f}%<br>%{customdata[0]} (p Holm %{customdata[1]:.2g})<extra></extra>",
        )
    )
    fig.add_vline(x=0, line_color="#1F2A37", line_width=1)
    fig.update_layout(
        title={"text": f"{version_label(new)} compared with {version_label(old)}", "x": 0, "xanchor": "left"},
        xaxis_title=f"Change relative to {version_label(old)} (%)",
        yaxis_title="",
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        height=60 + 42 * max(len(shown), 1),
        showlegend=False,
    )
    return fig


# ------------------------------------------------------------------------------------ rollback and audit


def audit_display(audit: pd.DataFrame) -> pd.DataFrame:
    """The audit log as shown (newest first, as read): an outcome icon first, the file's line number last."""
    shown = audit.copy()
    shown["result"] = [f"{OUTCOME_ICONS.get(str(o), '')} {o}".strip() for o in shown["outcome"]]
    first = ["result", "timestamp", "actor", "from_version", "to_version", "message"]
    return shown[first + [c for c in shown.columns if c not in first and c != "outcome"]]
