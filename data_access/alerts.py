"""Queries for the monitors and the Alerts page: window aggregates of the rollups, and the alert tables.

A monitor evaluation runs two queries whatever the number of rules: per-version totals from the minute profile
and fine histograms, each a union over the distinct (window, endpoints) scopes of all the rules, so 50 rules
cost two engine round trips. Canary rules run the Overview's own queries (`versions.traffic`,
`version_totals`, `histograms_by_version`) over the days both versions served.

Windows end at a minute. Counts (requests, errors, unparsed payloads, tokens) are exact to the minute; figures
read from the hourly histograms (shares, means, percentiles) cover the whole hours the window touches, so a
"last 1 h" percentile at 14:35 rests on 13:00 to 14:35.

The alert tables live beside the requests table (`<requests>_alert_state`, `_alert_history`, `_alert_outbox`):
in the embedded file, or as Delta tables in the warehouse's catalog on Databricks. The monitors job writes them
(jobs/monitors.py); the job and the page read them through these queries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from core.monitor_rules import Scope
from data_access.config import TableName
from data_access.queries import Filters, Query, sum_counts
from data_access.queries.versions import totals_by_version
from data_access.rollups import histogram_rows, minute_rows

ALERT_STATE_SCHEMA = ibis.schema(
    {
        "rule": dt.string,
        "state": dt.string,  # ok, firing, resolved, insufficient data
        "since": dt.timestamp,  # when the rule entered this state
        "transition": dt.int64,  # how many notified transitions the rule has had
        "value": dt.float64,
        "samples": dt.int64,
        "limit_value": dt.float64,
        "severity": dt.string,
        "detail": dt.string,
        "window_start": dt.timestamp,
        "window_end": dt.timestamp,
        "evaluated_at": dt.timestamp,
        "rule_digest": dt.string,
    }
)
ALERT_HISTORY_SCHEMA = ibis.schema(
    {
        "rule": dt.string,
        "evaluated_at": dt.timestamp,  # the evaluation's clock (window end)
        "state": dt.string,
        "previous_state": dt.string,
        "notified": dt.boolean,  # this evaluation changed state in a way that sends a notification
        "transition": dt.int64,  # the rule's transition count after this evaluation (joins the outbox)
        "value": dt.float64,
        "samples": dt.int64,
        "limit_value": dt.float64,
        "detail": dt.string,
        "rule_digest": dt.string,
    }
)
OUTBOX_SCHEMA = ibis.schema(
    {
        "idempotency_key": dt.string,  # one per transition and webhook; the receiver may dedupe on it
        "rule": dt.string,
        "transition": dt.int64,
        "state": dt.string,  # firing or resolved
        "webhook": dt.string,  # the webhook's name; its URL is a secret and never stored
        "body": dt.string,  # the JSON sent (Slack or generic format)
        "created_at": dt.timestamp,
        "attempts": dt.int64,
        "last_error": dt.string,  # status or error class only, never the URL
        "sent_at": dt.timestamp,  # null until a 2xx answer
    }
)


def alert_tables(requests: TableName) -> dict[str, TableName]:
    return {kind: replace(requests, table=f"{requests.table}_alert_{kind}") for kind in ("state", "history", "outbox")}


def _table(name: TableName, schema: ibis.Schema) -> ir.Table:
    return ibis.table(schema, name=name.table, database=name.schema, catalog=name.catalog)


# --- Evaluation ----------------------------------------------------------------------------------------------


def _scope_filters(scope: Scope) -> Filters:
    """Date filters covering the scope, so the engine prunes by date before the finer time filter."""
    return Filters(start=scope.start.date(), end=scope.end.date(), endpoints=scope.endpoints)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def window_totals(table: TableName, scopes: Sequence[Scope], from_rollups: bool = True) -> Query:
    """Per scope and version: requests, errors, unparsed payloads and tokens, from the minute profile."""
    parts = []
    for index, scope in enumerate(scopes):
        m = minute_rows(table, _scope_filters(scope), from_rollups)
        m = m.filter((m.bucket >= ibis.literal(scope.start)) & (m.bucket < ibis.literal(scope.end)))
        parts.append(totals_by_version(m).mutate(scope=ibis.literal(index, "int64")))
    expr = ibis.union(*parts, distinct=False).order_by(["scope", "model_version"])
    return Query("window_totals", expr)


def window_histograms(
    table: TableName, scopes: Sequence[Scope], metrics: Sequence[str], from_rollups: bool = True
) -> Query:
    """Per scope, version, metric, scorer and fine bin: the histogram over the hours the scope touches."""
    parts = []
    for index, scope in enumerate(scopes):
        h = histogram_rows(table, _scope_filters(scope), from_rollups)
        h = h.filter(
            (h.hour >= ibis.literal(_hour(scope.start)))
            & (h.hour < ibis.literal(scope.end))
            & h.metric.isin([ibis.literal(m) for m in metrics])
        )
        parts.append(
            h.group_by([h.model_version, h.metric, h.scorer, h.bin])
            .agg(n=sum_counts(h.n), total=h.total.sum(), lo=h.lo.min(), hi=h.hi.max())
            .mutate(scope=ibis.literal(index, "int64"))
        )
    expr = ibis.union(*parts, distinct=False).order_by(["scope", "model_version", "metric", "scorer", "bin"])
    return Query("window_histograms", expr)


def newest_request(table: TableName, from_rollups: bool = True) -> Query:
    """The minute of the newest request (the clock of replayed or back-filled traffic)."""
    m = minute_rows(table, Filters(), from_rollups)
    return Query("newest_request", m.aggregate(newest=m.bucket.max()))


# --- The Alerts page -------------------------------------------------------------------------------------------


def alert_states(table: TableName) -> Query:
    """Every rule's current state, firing first, then by severity and name."""
    s = _table(alert_tables(table)["state"], ALERT_STATE_SCHEMA)
    order = ibis.cases((s.state == "firing", 0), (s.state == "resolved", 1), (s.state == "ok", 3), else_=2)
    severity = ibis.cases((s.severity == "critical", 0), (s.severity == "warning", 1), else_=2)
    expr = (
        s.mutate(_order=order, _severity=severity).order_by(["_order", "_severity", "rule"]).drop("_order", "_severity")
    )
    return Query("alert_states", expr)


def alert_history(table: TableName, since: datetime | None = None, rules: tuple[str, ...] = ()) -> Query:
    """Evaluations (each rule's value over time) since a moment, oldest first."""
    h = _table(alert_tables(table)["history"], ALERT_HISTORY_SCHEMA)
    if since is not None:
        h = h.filter(h.evaluated_at >= ibis.literal(since))
    if rules:
        h = h.filter(h.rule.isin([ibis.literal(r) for r in rules]))
    return Query("alert_history", h.order_by(["rule", "evaluated_at"]))


def _decided(h: ir.Table, o: ir.Table) -> ir.BooleanValue:
    """An outbox row belongs to a recorded decision: the history row of the same rule, transition and clock.
    (On a warehouse the outbox is written before the history, so a job killed in between leaves outbox rows of
    a decision that was never recorded: they are never sent and never counted.)"""
    return (o.rule == h.rule) & (o.transition == h.transition) & (o.created_at == h.evaluated_at) & h.notified


def pending_notifications(table: TableName) -> Query:
    """Outbox rows of recorded decisions not yet delivered, oldest first."""
    h = _table(alert_tables(table)["history"], ALERT_HISTORY_SCHEMA)
    o = _table(alert_tables(table)["outbox"], OUTBOX_SCHEMA)
    pending = o.filter(o.sent_at.isnull()).semi_join(h, _decided(h, o)).order_by(["created_at", "rule", "webhook"])
    return Query("pending_notifications", pending.select("idempotency_key", "rule", "state", "webhook", "body",
                 "attempts"))  # fmt: skip


def latest_history(table: TableName) -> Query:
    """Each rule's newest evaluation in the history (the state table's rows follow it unless a job was killed
    between writing the two on a warehouse)."""
    h = _table(alert_tables(table)["history"], ALERT_HISTORY_SCHEMA)
    newest = h.filter(h.evaluated_at == h.evaluated_at.max().over(group_by=h.rule))
    return Query("latest_history", newest.select("rule", "evaluated_at", "state", "transition"))


def alert_transitions(table: TableName, limit: int = 200) -> Query:
    """The notified changes (to firing, and resolutions), newest first, with how their notifications went."""
    h = _table(alert_tables(table)["history"], ALERT_HISTORY_SCHEMA)
    o = _table(alert_tables(table)["outbox"], OUTBOX_SCHEMA)
    deliveries = o.group_by(["rule", "transition", "created_at"]).agg(
        webhooks=o.webhook.count(), delivered=o.sent_at.count(), attempts=sum_counts(o.attempts)
    )
    changes = h.filter(h.notified)
    joined = changes.left_join(
        deliveries,
        (changes.rule == deliveries.rule)
        & (changes.transition == deliveries.transition)
        & (changes.evaluated_at == deliveries.created_at),
    )
    expr = joined.select(
        changes.rule,
        changes.evaluated_at,
        changes.previous_state,
        changes.state,
        changes.value,
        changes.samples,
        changes.limit_value,
        changes.detail,
        webhooks=joined.webhooks.fill_null(0),
        delivered=joined.delivered.fill_null(0),
        attempts=joined.attempts.fill_null(0),
    )
    return Query("alert_transitions", expr.order_by([ibis.desc("evaluated_at"), "rule"]).limit(limit))


def _alerts_page(table: TableName, filters: Filters, grain: str) -> list[Query]:
    # The page reads the alert tables only: each rule has its own window and filters, not the sidebar's.
    return [alert_states(table), alert_history(table), alert_transitions(table)]


PAGE_QUERIES: dict[str, Callable[[TableName, Filters, str], list[Query]]] = {"Alerts": _alerts_page}
