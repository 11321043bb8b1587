"""The monitors job: evaluate the rules in monitors.toml, keep each rule's state, and notify webhooks once.

    python -m jobs.monitors --help

It runs by hand, and after every scoring run of either engine (so `python -m jobs.score --watch 300` evaluates every
five minutes). One run:

1. reads the rules (a broken rule is reported by name and field; the others run);
2. evaluates them on the engine's aggregates: two queries for all threshold rules, the Overview's queries (and its
   comparison, once) for each canary pair;
3. writes each rule's evaluation to the history, its new state, and, for every change to firing or to resolved,
   one outbox row per webhook with an idempotency key for that transition: in ONE transaction in the embedded
   file (`data_access.alert_store.AlertStore`); on a warehouse, which commits one statement at a time, in three
   idempotent statements whose commit point is the history (`WarehouseAlertStore`);
4. sends what the outbox holds for recorded decisions, oldest first, retrying with exponential backoff, and
   records a row as sent only after the receiver answered 2xx.

A job killed before its decision is recorded decides again next time (the state did not move), and one killed
after finds the notification waiting in the outbox: nothing is lost and nothing is decided twice. The one gap left
is a kill after the receiver accepted and before the job recorded it: that notification goes out again with the
same `Idempotency-Key`, so the receiver can drop it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from core import comparison
from core import monitor_rules as mr
from core.versions import version_sort_key
from data_access import alerts, rollup_status
from data_access.alert_store import AlertStore, AlertTables, Decision, WarehouseAlertStore
from data_access.config import Settings, TableName, settings_for_command
from data_access.errors import DataAccessError
from data_access.queries import Filters, Query, run, versions
from data_access.sources import DuckDBSource, Source, open_source

AliasResolver = Callable[[str], str | None]


# --- Evaluation ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    rule: mr.Rule
    verdict: mr.Verdict
    start: datetime
    end: datetime
    versions: tuple[str, ...] = ()  # the pair a canary compared (baseline, candidate)

    def links(self) -> dict[str, str]:
        return mr.view_links(self.rule, self.start, self.end, self.versions)


def _frame(source: Source, query: Query) -> pd.DataFrame:
    return run(source, query).table.to_pandas()


def rollups_usable(source: Source, table: TableName) -> bool:
    """The pages' own test (`rollup_status.rollups_usable`), on every engine: the rollups, when they are current."""
    try:
        freshness = run(source, rollup_status.rollup_freshness(table)).table.to_pylist()
    except DataAccessError:
        return False
    return rollup_status.rollups_usable(freshness)


def evaluation_clock(rule_file: mr.RuleFile, source: Source, table: TableName, from_rollups: bool) -> datetime:
    """Now, or with `clock = "data"` the minute after the newest request (replayed or back-filled traffic)."""
    if rule_file.clock == "data":
        newest = _frame(source, alerts.newest_request(table, from_rollups))["newest"].iloc[0]
        if newest is not None and newest == newest:
            return pd.Timestamp(newest).to_pydatetime() + pd.Timedelta(minutes=1)
    return datetime.now(UTC).replace(tzinfo=None)


def evaluate(
    rule_file: mr.RuleFile,
    source: Source,
    table: TableName,
    at: datetime,
    from_rollups: bool,
    resolve_alias: AliasResolver | None = None,
) -> list[Evaluation]:
    """Every valid rule's verdict at `at` (naive UTC). A rule whose data cannot be read gets insufficient data."""
    thresholds = [r for r in rule_file.rules if r.kind == "threshold"]
    results = _threshold_evaluations(thresholds, rule_file, source, table, at, from_rollups)
    canaries = _CanaryCache()
    for rule in rule_file.rules:
        if rule.kind == "canary":
            results.append(_canary_evaluation(rule, source, table, at, from_rollups, resolve_alias, canaries))
    order = {rule.name: i for i, rule in enumerate(rule_file.rules)}
    return sorted(results, key=lambda e: order[e.rule.name])


def _threshold_evaluations(
    rules: Sequence[mr.Rule],
    rule_file: mr.RuleFile,
    source: Source,
    table: TableName,
    at: datetime,
    from_rollups: bool,
) -> list[Evaluation]:
    if not rules:
        return []
    scopes = list(dict.fromkeys(mr.scope_of(rule, at) for rule in rules))
    totals = _frame(source, alerts.window_totals(table, scopes, from_rollups))
    metrics = sorted({rule.metric for rule in rules if rule.metric})
    hist = _frame(source, alerts.window_histograms(table, scopes, metrics, from_rollups)) if metrics else None
    # Split once, so each rule reads only its scope's (and metric's) rows.
    totals_of = dict(iter(totals.groupby("scope")))
    hist_of = dict(iter(hist.groupby(["scope", "metric"]))) if hist is not None else {}
    results = []
    for rule in rules:
        scope = mr.scope_of(rule, at)
        index = scopes.index(scope)
        scope_totals = totals_of.get(index, totals.iloc[:0])
        scope_hist = hist_of.get((index, rule.metric), _no_histograms())
        verdict = mr.threshold_verdict(rule, scope_totals, scope_hist, rule_file.prices)
        results.append(Evaluation(rule, verdict, scope.start, scope.end))
    return results


def _no_histograms() -> pd.DataFrame:
    return pd.DataFrame(columns=["model_version", "metric", "scorer", "bin", "n", "total", "lo", "hi"])


@dataclass
class _CanaryCache:
    """One evaluation's canary work, shared by the rules that ask the same: the aggregates of a pair over a
    window are read once, and the Overview's comparison of the pair (every measure, Holm-adjusted together) is
    computed once per toxicity threshold; each rule reads its measure's row."""

    inputs: dict[tuple[Any, ...], mr.CanaryInputs | str] = field(default_factory=dict)
    tables: dict[tuple[Any, ...], pd.DataFrame] = field(default_factory=dict)


def _canary_evaluation(
    rule: mr.Rule,
    source: Source,
    table: TableName,
    at: datetime,
    from_rollups: bool,
    resolve_alias: AliasResolver | None,
    cache: _CanaryCache,
) -> Evaluation:
    scope = mr.scope_of(rule, at)
    last_day = (scope.end - timedelta(microseconds=1)).date()  # canaries compare whole days, as the Overview does
    filters = Filters(start=scope.start.date(), end=last_day, endpoints=rule.endpoints)
    key = (filters, rule.baseline, rule.candidate)
    if key not in cache.inputs:
        cache.inputs[key] = _canary_inputs(rule, source, table, filters, from_rollups, resolve_alias)
    inputs = cache.inputs[key]
    if isinstance(inputs, str):
        return Evaluation(rule, mr.Verdict(mr.INSUFFICIENT, None, 0, inputs), scope.start, scope.end)
    compared = None
    if inputs.days is not None:
        threshold = rule.threshold or 0.5
        if (key, threshold) not in cache.tables:
            cache.tables[key, threshold] = mr.canary_table(inputs, threshold)
        compared = cache.tables[key, threshold]
    verdict = mr.canary_verdict(rule, inputs, compared)
    return Evaluation(rule, verdict, scope.start, scope.end, (inputs.baseline, inputs.candidate))


def _canary_inputs(
    rule: mr.Rule,
    source: Source,
    table: TableName,
    filters: Filters,
    from_rollups: bool,
    resolve_alias: AliasResolver | None,
) -> mr.CanaryInputs | str:
    """The pair and the Overview's aggregates over the days both served, or why there is nothing to compare."""
    by_day = _frame(source, versions.traffic(table, filters, "day", from_rollups))
    served = sorted(
        by_day.loc[by_day["requests"] > 0, "model_version"].dropna().astype(str).unique(), key=version_sort_key
    )
    if rule.baseline is None:
        if len(served) < 2:
            return f"fewer than two versions served in {filters.start} to {filters.end}"
        baseline, candidate = served[-2], served[-1]
    else:
        resolved = [_version(name, resolve_alias) for name in (rule.baseline, rule.candidate)]
        if isinstance(resolved[0], mr.RuleProblem) or isinstance(resolved[1], mr.RuleProblem):
            return next(r.message for r in resolved if isinstance(r, mr.RuleProblem))
        baseline, candidate = resolved  # type: ignore[assignment]
    days = comparison.overlap_window(by_day, baseline, candidate)
    if days is None:
        return mr.CanaryInputs(baseline, candidate, pd.DataFrame(), pd.DataFrame(), None)
    window = Filters(start=days[0], end=days[1], endpoints=filters.endpoints)
    totals = _frame(source, versions.version_totals(table, window, from_rollups))
    hist = _frame(source, versions.histograms_by_version(table, window, (), from_rollups))
    return mr.CanaryInputs(baseline, candidate, totals, hist, days)


def _version(name: str, resolve_alias: AliasResolver | None) -> str | mr.RuleProblem:
    if name not in mr.ALIASES:
        return name
    if resolve_alias is None:
        return mr.RuleProblem(name, "baseline", f"the alias {name!r} needs the model registry, which is not set up")
    try:
        version = resolve_alias(name)
    except DataAccessError as error:
        return mr.RuleProblem(name, "baseline", f"cannot read the alias {name!r}: {error.message}")
    if version is None:
        return mr.RuleProblem(name, "baseline", f"the alias {name!r} is not set in the registry")
    return str(version)


def registry_aliases(settings: Settings) -> AliasResolver:
    """Aliases through the registry code the Model registry page uses (MLflow: local demo store or Databricks)."""

    def resolve(alias: str) -> str | None:
        from data_access.registry.reading import alias_version
        from data_access.registry.store import registry_config_for  # MLflow: import only when needed

        version = alias_version(registry_config_for(settings), settings.model_name, alias)
        return None if version is None else str(version)

    return resolve


# --- The alert tables ------------------------------------------------------------------------------------------


def decide(
    previous: dict[str, dict[str, Any]],
    evaluations: Sequence[Evaluation],
    at: datetime,
    webhooks: dict[str, mr.Webhook],
    app_url: str | None,
) -> Decision:
    """Each rule's next state from its previous one (`previous`: state rows by rule), with its history row and,
    for a change to notify, one outbox row per webhook. A rule already evaluated at this clock is skipped, so a
    rerun after a kill changes nothing."""
    history, states, outbox = [], [], []
    for evaluation in evaluations:
        rule, verdict = evaluation.rule, evaluation.verdict
        before = previous.get(rule.name)
        if before is not None and before["evaluated_at"] == at:
            continue
        old_state = before["state"] if before else None
        change = mr.next_state(old_state, verdict.outcome)
        transition = (before["transition"] if before else 0) + (1 if change.notify else 0)
        since = at if before is None or change.state != old_state else before["since"]
        shared = {
            "value": verdict.value if verdict.value is not None else None,
            "samples": verdict.samples,
            "limit_value": rule.limit,
            "detail": verdict.detail,
            "rule_digest": rule.digest,
        }
        history.append(
            {"rule": rule.name, "evaluated_at": at, "state": change.state, "previous_state": old_state,
             "notified": change.notify, "transition": transition, **shared}
        )  # fmt: skip
        states.append(
            {"rule": rule.name, "state": change.state, "since": since, "transition": transition,
             "severity": rule.severity, "window_start": evaluation.start, "window_end": evaluation.end,
             "evaluated_at": at, **shared}
        )  # fmt: skip
        if change.notify:
            for hook in rule.notify:
                outbox.append(_outbox_row(evaluation, old_state, change.state, transition, at, webhooks[hook], app_url))
    return Decision(history, states, outbox)


def idempotency_key(rule: str, transition: int, state: str, at: datetime, webhook: str) -> str:
    """One key per transition and webhook; the clock keeps keys new if the alert tables are ever reset."""
    text = f"{rule}\x1f{transition}\x1f{state}\x1f{at.isoformat()}\x1f{webhook}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _outbox_row(
    evaluation: Evaluation,
    old_state: str | None,
    state: str,
    transition: int,
    at: datetime,
    hook: mr.Webhook,
    app_url: str | None,
) -> dict[str, Any]:
    key = idempotency_key(evaluation.rule.name, transition, state, at, hook.name)
    record = notification_record(evaluation, old_state, state, at, key, app_url)
    body = slack_body(record) if hook.format == "slack" else record
    return {
        "idempotency_key": key, "rule": evaluation.rule.name, "transition": transition, "state": state,
        "webhook": hook.name, "body": json.dumps(body, sort_keys=True), "created_at": at, "attempts": 0,
        "last_error": None, "sent_at": None,
    }  # fmt: skip


# --- Notifications ---------------------------------------------------------------------------------------------


def notification_record(
    evaluation: Evaluation, old_state: str | None, state: str, at: datetime, key: str, app_url: str | None = None
) -> dict[str, Any]:
    """The generic JSON body: everything a receiver needs, including the key to dedupe on. Links are paths of the
    app (absolute when `app_url` is set) to the Trends and Requests views filtered to the alert's window."""
    rule, verdict = evaluation.rule, evaluation.verdict
    links = {name: f"{app_url}/{path}" if app_url else path for name, path in evaluation.links().items()}
    return {
        "idempotency_key": key,
        "rule": rule.name,
        "kind": rule.kind,
        "severity": rule.severity,
        "state": state,
        "previous_state": old_state,
        "condition": rule.describe(),
        "value": verdict.value,
        "limit": rule.limit,
        "samples": verdict.samples,
        "detail": verdict.detail,
        "window_start": evaluation.start.isoformat(),
        "window_end": evaluation.end.isoformat(),
        "evaluated_at": at.isoformat(),
        "links": links,
    }


def slack_body(record: dict[str, Any]) -> dict[str, Any]:
    """Slack's incoming-webhook format: `text` for notifications, with blocks for the message itself."""
    icon = ":rotating_light:" if record["state"] == mr.FIRING else ":white_check_mark:"
    value = "–" if record["value"] is None else f"{record['value']:.4g}"
    headline = f"{icon} [{record['severity']}] {record['rule']} is {record['state']}: {record['condition']}"
    facts = f"value {value} (limit {record['limit']:g}), {record['samples']:,} values. {record['detail']}"
    links = " · ".join(f"{name}: {path}" for name, path in record["links"].items())
    return {
        "text": f"{headline} ({value})",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*\n{facts}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{links} · key {record['idempotency_key']}"}]},
        ],
        "idempotency_key": record["idempotency_key"],
    }


class DeliveryError(Exception):
    """A failed attempt, described without the URL (which carries the webhook's credential)."""


@dataclass(frozen=True)
class Delivery:
    sent: int
    failed: int
    messages: list[str]


def post(url: str, body: str, key: str, timeout_s: float) -> None:
    request = urllib.request.Request(
        url,
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": key, "User-Agent": "inference-explorer"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        raise DeliveryError(f"HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DeliveryError(type(reason).__name__) from None
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status}")


def deliver(
    store: AlertTables,
    urls: dict[str, str],
    attempts: int = 5,
    backoff_s: float = 0.5,
    max_wait_s: float = 8.0,
    timeout_s: float = 10.0,
) -> Delivery:
    """Send every pending notification, each with up to `attempts` tries and exponential backoff between them."""
    sent = failed = 0
    messages = []
    for note in store.pending():
        url = urls.get(note.webhook)
        if not url or not url.startswith(("http://", "https://")):
            env = f"INFERENCE_EXPLORER_WEBHOOK_{note.webhook.upper()}"
            store.failed(note.idempotency_key, note.attempts, f"no http(s) URL for webhook {note.webhook!r} ({env})")
            failed += 1
            messages.append(f"webhook {note.webhook!r} has no URL: set {env} or [webhooks] in the secrets file")
            continue
        tries = 0
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(attempts),
                wait=wait_exponential(multiplier=backoff_s, max=max_wait_s),
                retry=retry_if_exception_type(DeliveryError),
                reraise=True,
            ):
                with attempt:
                    tries += 1
                    post(url, note.body, note.idempotency_key, timeout_s)
        except DeliveryError as error:
            store.failed(note.idempotency_key, note.attempts + tries, str(error))
            failed += 1
            messages.append(f"{note.rule} {note.state} → {note.webhook}: not delivered after {tries} tries ({error})")
            continue
        store.delivered(note.idempotency_key, note.attempts + tries)
        sent += 1
        messages.append(f"{note.rule} {note.state} → {note.webhook}: delivered")
    return Delivery(sent, failed, messages)


# --- One run -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    at: datetime
    evaluations: list[Evaluation]
    problems: tuple[mr.RuleProblem, ...]
    queued: list[str]
    delivery: Delivery | None

    def lines(self) -> list[str]:
        lines = [f"problem: {problem.line()}" for problem in self.problems]
        for e in self.evaluations:
            value = "–" if e.verdict.value is None else f"{e.verdict.value:.4g}"
            lines.append(f"{e.rule.name}: {e.verdict.outcome} (value {value}, {e.verdict.samples:,} values)")
        lines.append(f"evaluated {len(self.evaluations)} rule(s) at {self.at:%Y-%m-%d %H:%M} UTC; "
                     f"{len(self.queued)} notification(s) queued")  # fmt: skip
        if self.delivery is not None:
            lines += self.delivery.messages
        return lines


def run_monitors(
    settings: Settings,
    duckdb_path: Path | None = None,
    requests: TableName | None = None,
    rules_path: Path | None = None,
    at: datetime | None = None,
    send: bool = True,
    on_decided: Callable[[list[str]], None] | None = None,
    source: Source | None = None,
    alerts_in_source: bool | None = None,
    **delivery_options: Any,
) -> RunSummary:
    """Evaluate, record, then send.

    The requests are read where the pages read them (the embedded file, or the SQL warehouse on the Databricks
    backend), or from `source` (the Spark engine's session). The alert tables live beside the requests table:
    in the embedded file, or in the warehouse's catalog, written through the same source in Databricks SQL
    (`alerts_in_source`, default: whenever the source speaks Databricks SQL; the local Spark engine, whose
    parquet tables cannot MERGE, keeps them in the embedded file)."""
    requests = requests or settings.requests_table
    path = duckdb_path or settings.duckdb_path
    rule_file = mr.load_rules(rules_path or settings.monitors_file)
    if source is None:
        source = open_source(settings) if settings.backend == "databricks" else DuckDBSource(path)
    in_source = source.dialect == "databricks" if alerts_in_source is None else alerts_in_source
    store: AlertTables = WarehouseAlertStore(source, requests) if in_source else AlertStore(path, requests)
    from_rollups = rollups_usable(source, requests)
    clock = at or evaluation_clock(rule_file, source, requests, from_rollups)
    store.ensure()
    evaluations = evaluate(rule_file, source, requests, clock, from_rollups, registry_aliases(settings))
    decision = store.write(lambda previous: decide(previous, evaluations, clock, rule_file.webhooks, settings.app_url))
    queued = [row["idempotency_key"] for row in decision.outbox]
    if on_decided:
        on_decided(queued)
    delivery = deliver(store, settings.webhook_urls, **delivery_options) if send else None
    return RunSummary(clock, evaluations, rule_file.problems, queued, delivery)


def main(argv: list[str] | None = None) -> int:
    settings = settings_for_command()
    parser = argparse.ArgumentParser(
        prog="python -m jobs.monitors",
        description="Evaluate the monitor rules, record each rule's state and notify webhooks of changes.",
        epilog="Webhook URLs come from [webhooks] in .streamlit/secrets.toml or INFERENCE_EXPLORER_WEBHOOK_<NAME>.",
    )
    parser.add_argument("--rules", type=Path, default=settings.monitors_file, help="rules file (default: %(default)s)")
    parser.add_argument("--duckdb", type=Path, default=settings.duckdb_path, help="DuckDB file (default: %(default)s)")
    parser.add_argument("--requests-table", default=str(settings.requests_table), help="scored requests table")
    parser.add_argument("--at", type=datetime.fromisoformat, default=None, help="evaluate as of this UTC time")
    parser.add_argument("--no-send", action="store_true", help="record states and queue notifications only")
    parser.add_argument("--watch", type=float, default=None, metavar="SECONDS", help="evaluate again every N seconds")
    args = parser.parse_args(argv)
    try:
        while True:
            summary = run_monitors(
                settings, args.duckdb, TableName.parse(args.requests_table), args.rules,
                args.at.replace(tzinfo=None) if args.at else None, not args.no_send,
                on_decided=lambda keys: print(f"decided: {len(keys)} notification(s) queued", flush=True),
            )  # fmt: skip
            for line in summary.lines():
                print(line, flush=True)
            if args.watch is None:
                return 1 if summary.problems else 0
            time.sleep(args.watch)
    except DataAccessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
