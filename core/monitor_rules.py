"""Monitor rules: read and check `monitors.toml`, and decide each rule's state from engine aggregates.

Pure: dicts and frames in, rules and verdicts out; no SQL, no Streamlit, no I/O but reading the rules file.

A rule file holds `[[rule]]` tables. A mistake in one rule gives a `RuleProblem` naming the rule and the field,
and every other rule still runs. Two kinds:

- threshold: a figure the pages show (toxic response share, mean or percentile of a score, error rate,
  latency percentile, cost per 1K requests, unparsed share) over a window, against `above` or `below`;
- canary: a newer version against an older one (or the `champion` alias against `previous`) on the days both
  served, judged by the Overview page's own comparison (same tests, same Holm adjustment) plus an effect floor.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from core import comparison, stats
from core.catalog import METRICS
from core.pricing import Price, with_costs

KINDS = ("threshold", "canary")
SEVERITIES = ("info", "warning", "critical")
# Threshold figures. "share" needs a probability metric and a threshold; "mean"/"percentile" any metric.
FIGURES = ("toxic_share", "mean", "percentile", "error_rate", "unparsed_share", "cost_per_1k", "latency_p95")
RATE_METRICS = ("response_toxicity", "prompt_toxicity")  # linear-binned probabilities: shares are exact
CANARY_MEASURES = {measure.key: measure for measure in comparison.MEASURES}
ALIASES = ("champion", "previous")
_WINDOW = re.compile(r"^\s*(\d+)\s*(m|min|h|d)\s*$")
_UNIT = {"m": 60, "min": 60, "h": 3600, "d": 86400}

# States kept per rule, and what an evaluation can conclude.
OK, FIRING, RESOLVED, INSUFFICIENT = "ok", "firing", "resolved", "insufficient data"
STATES = (OK, FIRING, RESOLVED, INSUFFICIENT)


class RuleError(ValueError):
    """A mistake in one rule: which rule, which field, what to write instead."""

    def __init__(self, rule: str, field_name: str, message: str) -> None:
        super().__init__(f"rule {rule!r}, field {field_name!r}: {message}")
        self.rule, self.field, self.message = rule, field_name, message


@dataclass(frozen=True)
class RuleProblem:
    rule: str
    field: str
    message: str

    def line(self) -> str:
        return f"rule {self.rule!r}, field {self.field!r}: {self.message}"


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    window: timedelta
    severity: str = "warning"
    min_samples: int = 100
    versions: tuple[str, ...] = ()  # threshold rules: only these versions (empty: all)
    endpoints: tuple[str, ...] = ()
    notify: tuple[str, ...] = ()  # webhook names
    description: str = ""
    # threshold rules
    figure: str = ""
    metric: str | None = None  # the score or operational column behind the figure
    threshold: float | None = None  # toxic_share: a value counts at or above this
    quantile: float | None = None  # percentile: 0-1
    above: float | None = None
    below: float | None = None
    # canary rules
    measure: str = ""  # a key of the Overview's comparison (`ui.stats.MEASURES`)
    baseline: str | None = None  # a version, or an alias; None: the older of the two newest versions
    candidate: str | None = None
    min_effect: float = 0.1  # |Cohen's h| for rates, |Cliff's delta| for distributions
    alpha: float = stats.ALPHA

    @property
    def limit(self) -> float | None:
        """The number the value is held against (for the page's sparkline)."""
        if self.kind == "canary":
            return self.min_effect
        return self.above if self.above is not None else self.below

    @property
    def digest(self) -> str:
        """Changes whenever the rule's meaning changes (shown beside its history)."""
        text = json.dumps(asdict(self), default=str, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        if self.description:
            return self.description
        if self.kind == "canary":
            pair = f"{self.candidate or 'newer'} vs {self.baseline or 'older'}"
            return (
                f"{CANARY_MEASURES[self.measure].label}: {pair} significantly worse (Holm, α={self.alpha}) "
                f"with effect ≥ {self.min_effect} over {window_text(self.window)}"
            )
        condition = f"above {self.above:g}" if self.above is not None else f"below {self.below:g}"
        return f"{figure_label(self)} {condition} over {window_text(self.window)}"


@dataclass(frozen=True)
class Webhook:
    name: str
    format: str = "slack"  # "slack": {"text": …} with blocks; "generic": the full JSON record


@dataclass(frozen=True)
class RuleFile:
    rules: tuple[Rule, ...]
    problems: tuple[RuleProblem, ...]
    webhooks: dict[str, Webhook] = field(default_factory=dict)
    prices: dict[str, Price] = field(default_factory=dict)
    clock: str = "wall"  # "wall": windows end now; "data": they end at the newest request (replayed traffic)


def window_text(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds // 60} min"


def figure_label(rule: Rule) -> str:
    label = METRICS[rule.metric].label if rule.metric in METRICS else ""
    if rule.figure == "toxic_share":
        return f"{label} share ≥ {rule.threshold:g}"
    if rule.figure == "percentile":
        return f"{label} p{rule.quantile * 100:g}"
    if rule.figure == "mean":
        return f"Mean {label.lower()}"
    return {"error_rate": "Error rate", "unparsed_share": "Unparsed share", "cost_per_1k": "Cost per 1K requests"}[
        rule.figure
    ]


# --- Reading the file ---------------------------------------------------------------------------------------


def load_rules(path: Path) -> RuleFile:
    """Read a rules file. A file that cannot be read at all gives one problem and no rules."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RuleFile((), (RuleProblem("*", "monitors_file", f"{path} does not exist"),))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        return RuleFile((), (RuleProblem("*", "monitors_file", f"{path} is not valid TOML: {error}"),))
    return parse_rules(document)


def parse_rules(document: Mapping[str, Any]) -> RuleFile:
    problems: list[RuleProblem] = []
    webhooks = _webhooks(document.get("webhooks", {}), problems)
    prices = _prices(document.get("prices", {}), problems)
    clock = document.get("clock", "wall")
    if clock not in ("wall", "data"):
        problems.append(RuleProblem("*", "clock", f"{clock!r} is not 'wall' or 'data'"))
        clock = "wall"
    entries = document.get("rule", [])
    if not isinstance(entries, list):
        return RuleFile((), (*problems, RuleProblem("*", "rule", "write each rule as a [[rule]] table")))
    rules: list[Rule] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries, start=1):
        name = str(entry.get("name") or f"#{position}") if isinstance(entry, Mapping) else f"#{position}"
        try:
            rule = parse_rule(entry, name, webhooks)
            if rule.name in seen:
                raise RuleError(name, "name", "another rule has this name; names identify alert history")
        except RuleError as error:
            problems.append(RuleProblem(error.rule, error.field, error.message))
            continue
        seen.add(rule.name)
        rules.append(rule)
    return RuleFile(tuple(rules), tuple(problems), webhooks, prices, clock)


def _webhooks(section: Any, problems: list[RuleProblem]) -> dict[str, Webhook]:
    hooks = {}
    for name, options in (section or {}).items():
        fmt = options.get("format", "slack") if isinstance(options, Mapping) else None
        if fmt not in ("slack", "generic"):
            problems.append(RuleProblem("*", f"webhooks.{name}.format", "write format = 'slack' or 'generic'"))
            continue
        hooks[name] = Webhook(name, fmt)
    return hooks


def _prices(section: Any, problems: list[RuleProblem]) -> dict[str, Price]:
    prices = {}
    for version, options in (section or {}).items():
        try:
            prompt = float(options["prompt_per_1k"])
            completion = float(options["completion_per_1k"])
        except (KeyError, TypeError, ValueError):
            problems.append(
                RuleProblem("*", f"prices.{version}", "give prompt_per_1k and completion_per_1k in USD per 1K tokens")
            )
            continue
        prices[str(version)] = Price(prompt, completion)
    return prices


_COMMON = {"name", "kind", "window", "severity", "min_samples", "versions", "endpoints", "notify", "description"}
_THRESHOLD = {"metric", "score", "threshold", "quantile", "above", "below"}
_CANARY = {"measure", "baseline", "candidate", "min_effect", "alpha", "threshold"}


def parse_rule(entry: Any, name: str, webhooks: Mapping[str, Webhook]) -> Rule:
    if not isinstance(entry, Mapping):
        raise RuleError(name, "rule", "a rule is a table of fields")
    if not entry.get("name") or not isinstance(entry.get("name"), str):
        raise RuleError(name, "name", "every rule needs a name (text)")
    kind = entry.get("kind", "threshold")
    if kind not in KINDS:
        raise RuleError(name, "kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    unknown = set(entry) - _COMMON - (_THRESHOLD if kind == "threshold" else _CANARY)
    if unknown:
        raise RuleError(name, sorted(unknown)[0], f"not a field of a {kind} rule")
    common: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "window": parse_window(entry.get("window"), name),
        "severity": _choice(entry, "severity", SEVERITIES, name, "warning"),
        "min_samples": _integer(entry, "min_samples", name, 100),
        "versions": _texts(entry, "versions", name),
        "endpoints": _texts(entry, "endpoints", name),
        "notify": _texts(entry, "notify", name),
        "description": str(entry.get("description", "")),
    }
    for hook in common["notify"]:
        if hook not in webhooks:
            raise RuleError(name, "notify", f"no webhook named {hook!r} under [webhooks]")
    if kind == "canary":
        return _canary(entry, common)
    return _threshold(entry, common)


def parse_window(value: Any, name: str) -> timedelta:
    match = _WINDOW.match(str(value)) if value is not None else None
    if not match or int(match.group(1)) == 0:
        raise RuleError(name, "window", f"{value!r} is not a window such as '30m', '1h' or '7d'")
    return timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2)])


def _choice(entry: Mapping[str, Any], key: str, options: Sequence[str], name: str, default: str) -> str:
    value = entry.get(key, default)
    if value not in options:
        raise RuleError(name, key, f"{value!r} is not one of {', '.join(options)}")
    return value


def _integer(entry: Mapping[str, Any], key: str, name: str, default: int) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RuleError(name, key, f"{value!r} is not a whole number of at least 1")
    return value


def _number(entry: Mapping[str, Any], key: str, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RuleError(name, key, f"{value!r} is not a number from {low:g} to {high:g}")
    return float(value)


def _texts(entry: Mapping[str, Any], key: str, name: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if isinstance(value, str | int):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        raise RuleError(name, key, "give a list of names, e.g. ['7']")
    return tuple(str(v) for v in value)


def _threshold(entry: Mapping[str, Any], common: dict[str, Any]) -> Rule:
    name = common["name"]
    figure = entry.get("metric")
    if figure not in FIGURES:
        raise RuleError(name, "metric", f"{figure!r} is not one of {', '.join(FIGURES)}")
    extra: dict[str, Any] = {"figure": figure}
    if figure == "latency_p95":  # the Usage page's card, spelled out
        extra |= {"figure": "percentile", "metric": "latency_ms", "quantile": 0.95}
    elif figure in ("toxic_share", "mean", "percentile"):
        score = entry.get("score", "response_toxicity" if figure == "toxic_share" else None)
        allowed = RATE_METRICS if figure == "toxic_share" else tuple(METRICS)
        if score not in allowed:
            raise RuleError(name, "score", f"{score!r} is not one of {', '.join(allowed)}")
        extra["metric"] = score
        if figure == "toxic_share":
            extra["threshold"] = _number(entry, "threshold", name, 0.0, 1.0)
        if figure == "percentile":
            extra["quantile"] = _number(entry, "quantile", name, 0.0, 1.0)
    if ("above" in entry) == ("below" in entry):
        raise RuleError(name, "above", "give exactly one of above = N or below = N")
    side = "above" if "above" in entry else "below"
    extra[side] = _number(entry, side, name)
    return Rule(**common, **extra)


def _canary(entry: Mapping[str, Any], common: dict[str, Any]) -> Rule:
    name = common["name"]
    measure = entry.get("measure")
    if measure not in CANARY_MEASURES:
        raise RuleError(name, "measure", f"{measure!r} is not one of {', '.join(CANARY_MEASURES)}")
    if common["versions"]:
        raise RuleError(name, "versions", "a canary rule names its pair with baseline and candidate")
    pair = {key: (str(entry[key]) if key in entry else None) for key in ("baseline", "candidate")}
    if (pair["baseline"] is None) != (pair["candidate"] is None):
        raise RuleError(name, "baseline", "give both baseline and candidate, or neither (the two newest versions)")
    if pair["baseline"] is not None and pair["baseline"] == pair["candidate"]:
        raise RuleError(name, "candidate", "the candidate must differ from the baseline")
    threshold = _number(entry, "threshold", name, 0.05, 0.95) if "threshold" in entry else 0.5
    return Rule(
        **common,
        measure=measure,
        baseline=pair["baseline"],
        candidate=pair["candidate"],
        threshold=threshold,
        min_effect=_number(entry, "min_effect", name, 0.0, 2.0) if "min_effect" in entry else 0.1,
        alpha=_number(entry, "alpha", name, 1e-6, 0.5) if "alpha" in entry else stats.ALPHA,
    )


# --- Windows ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What one aggregate query covers: a time window and the endpoints (versions are summed afterwards)."""

    start: datetime
    end: datetime
    endpoints: tuple[str, ...] = ()


def scope_of(rule: Rule, end: datetime) -> Scope:
    end = end.replace(second=0, microsecond=0)
    return Scope(end - rule.window, end, rule.endpoints)


# --- Threshold verdicts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One evaluation of one rule: the state it points to, the value and how many values it rests on."""

    outcome: str  # OK, FIRING or INSUFFICIENT
    value: float | None
    samples: int
    detail: str


def _versions(frame: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    return frame[frame["model_version"].isin(rule.versions)] if rule.versions else frame


def threshold_verdict(rule: Rule, totals: pd.DataFrame, hist: pd.DataFrame, prices: Mapping[str, Price]) -> Verdict:
    """A threshold rule on its scope's aggregates.

    totals: one row per version with requests, errors, parse_errors, prompt_tokens and completion_tokens.
    hist: fine histogram rows with model_version, metric, scorer, bin, n, total, lo, hi.
    """
    value, samples, detail = figure_value(rule, _versions(totals, rule), _versions(hist, rule), prices)
    if samples < rule.min_samples or value is None or value != value:
        return Verdict(INSUFFICIENT, value, samples, f"{samples:,} values, fewer than {rule.min_samples:,}. {detail}")
    met = value > rule.above if rule.above is not None else value < rule.below  # type: ignore[operator]
    return Verdict(FIRING if met else OK, value, samples, detail)


def figure_value(
    rule: Rule, totals: pd.DataFrame, hist: pd.DataFrame, prices: Mapping[str, Price]
) -> tuple[float | None, int, str]:
    """(value, how many values it rests on, what it was computed from)."""
    requests = int(totals["requests"].sum()) if len(totals) else 0
    if rule.figure == "error_rate":
        errors = int(totals["errors"].sum()) if len(totals) else 0
        return (errors / requests if requests else None), requests, f"{errors:,} errors in {requests:,} requests"
    if rule.figure == "unparsed_share":
        unparsed = int(totals["parse_errors"].sum()) if len(totals) else 0
        return (unparsed / requests if requests else None), requests, f"{unparsed:,} unparsed of {requests:,}"
    if rule.figure == "cost_per_1k":
        return _cost_per_1k(totals, prices)
    rows = hist[hist["metric"] == rule.metric]
    scorer = _main_scorer(rows, rule.metric)
    if scorer is None:
        return None, 0, "no values scored"
    rows = rows[rows["scorer"].fillna(comparison.NO_SCORER) == scorer]
    per_bin = rows.groupby("bin", as_index=False).agg(
        n=("n", "sum"), total=("total", "sum"), lo=("lo", "min"), hi=("hi", "max")
    )
    by = f" ({scorer})" if scorer else ""
    values = stats.binned(per_bin)
    # A scorer that left requests out (a sample, failures, empty texts): the figure rests on its values only.
    of_requests = f"; {values.n:,} values of {requests:,} requests" if scorer and values.n < requests else ""
    if rule.figure == "toxic_share":
        above, scored = comparison.rate_at_or_above(per_bin, rule.metric, rule.threshold)  # type: ignore[arg-type]
        return (above / scored if scored else None), scored, f"{above:,} of {scored:,} at or above{by}{of_requests}"
    value = values.mean if rule.figure == "mean" else values.quantile(rule.quantile)  # type: ignore[arg-type]
    return value, values.n, f"{values.n:,} values{by}{of_requests}"


def _main_scorer(rows: pd.DataFrame, metric: str | None) -> str | None:
    """Numbers from two scorers are never pooled: a figure uses the scorer with the most values in its window."""
    if rows.empty:
        return None
    if metric in METRICS and METRICS[metric].scorer_column is None:
        return comparison.NO_SCORER
    counts = rows.assign(scorer=rows["scorer"].fillna(comparison.NO_SCORER)).groupby("scorer")["n"].sum()
    return str(counts.sort_index().idxmax())


def _cost_per_1k(totals: pd.DataFrame, prices: Mapping[str, Price]) -> tuple[float | None, int, str]:
    requests = int(totals["requests"].sum()) if len(totals) else 0
    if not requests:
        return None, 0, "no requests"
    costed = with_costs(totals, prices)
    unpriced = sorted(str(v) for v in costed.loc[~costed["priced"], "model_version"].fillna("unknown"))
    if unpriced:
        return None, 0, f"unpriced version(s) {', '.join(unpriced)}: add them under [prices]"
    cost = float(costed["cost"].sum())
    return cost / requests * 1000, requests, f"${cost:,.4f} for {requests:,} requests"


# --- Canary verdicts ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryInputs:
    """What a canary rule is judged on: the pair, and the page's own aggregates over the days both served."""

    baseline: str
    candidate: str
    totals: pd.DataFrame  # versions.version_totals rows
    hist: pd.DataFrame  # versions.histograms_by_version rows
    days: tuple[object, object] | None  # first and last day both served; None: never on the same day


def canary_table(inputs: CanaryInputs, threshold: float) -> pd.DataFrame:
    """The Overview's comparison table of the pair (one row per measure, indexed by measure key)."""
    hist = comparison.Histograms(inputs.hist)
    versions = [inputs.baseline, inputs.candidate]
    scorers = {m: hist.shared_scorer(m, versions) for m, info in METRICS.items() if info.scorer_column is not None}
    table = comparison.compare_versions(inputs.totals, hist, inputs.baseline, inputs.candidate, threshold, scorers)
    return table.set_index("key")


def canary_verdict(rule: Rule, inputs: CanaryInputs, table: pd.DataFrame | None = None) -> Verdict:
    """The Overview's comparison of the pair (all its measures, Holm-adjusted together), read for one measure.

    Fires when the candidate is worse, significantly after Holm's adjustment, and its effect size (Cohen's h
    for rates, Cliff's delta for distributions) is at least `min_effect`. The value is the signed effect, worse
    positive, so the page can draw it against the floor. `table`: the pair's `canary_table`, if already made.
    """
    pair = f"v{inputs.candidate} vs v{inputs.baseline}"
    if inputs.days is None:
        return Verdict(INSUFFICIENT, None, 0, f"{pair}: never served on the same day in the window")
    if table is None:
        table = canary_table(inputs, rule.threshold or 0.5)
    row = table.loc[rule.measure]
    samples = int(min(row["n_baseline"], row["n_comparison"]))
    where = f"{pair}, {inputs.days[0]} to {inputs.days[1]}"
    if samples < rule.min_samples or row["p_holm"] != row["p_holm"]:
        note = row["note"] or f"{samples:,} values on the smaller side, fewer than {rule.min_samples:,}"
        return Verdict(INSUFFICIENT, None, samples, f"{where}: {note}")
    worse = float(row["effect"]) * (1 if CANARY_MEASURES[rule.measure].lower_is_better else -1)
    detail = (
        f"{where}: {row['baseline']:.4g} → {row['comparison']:.4g}, {stats.p_text(row['p_holm'])} (Holm), "
        f"effect {worse:+.3f} ({row['effect_size']})"
    )
    fires = row["p_holm"] < rule.alpha and worse >= rule.min_effect
    return Verdict(FIRING if fires else OK, worse, samples, detail)


# --- State ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """A rule's next state, and whether that change is one to notify (to firing, or firing to resolved)."""

    state: str
    notify: bool


def next_state(previous: str | None, outcome: str) -> Transition:
    """ok/resolved/insufficient -> firing notifies; firing -> ok notifies as 'resolved', and the rule stays
    resolved while it holds. A firing rule whose data runs short stays firing (no data is not good news), so a
    gap never sends a resolution and then a second alert."""
    was_firing = previous == FIRING
    if outcome == FIRING:
        return Transition(FIRING, not was_firing)
    if outcome == INSUFFICIENT:
        return Transition(FIRING if was_firing else INSUFFICIENT, False)
    if was_firing:
        return Transition(RESOLVED, True)
    return Transition(RESOLVED if previous == RESOLVED else OK, False)


# --- Links to the requests behind an alert -------------------------------------------------------------------


def view_links(rule: Rule, start: datetime, end: datetime, versions: Sequence[str] = ()) -> dict[str, str]:
    """Paths with the URL state the sidebar filters read (ui/filters.py): the Trends and Requests pages filtered
    to the rule's versions, endpoints and the window's days. `versions` overrides the rule's (a canary's pair)."""
    params: list[tuple[str, str]] = [("version", v) for v in (versions or rule.versions)]
    params += [("endpoint", e) for e in rule.endpoints]
    last = (end - timedelta(microseconds=1)).date()
    params += [("dates", start.date().isoformat()), ("dates", last.isoformat())]
    params.append(("grain", "hour" if end - start <= timedelta(days=2) else "day"))
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in params)
    metric = rule.metric or (CANARY_MEASURES[rule.measure].metric if rule.kind == "canary" else None)
    trend = f"&trend_metric={metric}" if metric in METRICS else ""
    return {"Trends": f"trends?{query}{trend}", "Requests": f"requests?{query}"}
