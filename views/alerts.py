"""Alerts: every monitor rule with its state and current value, its value against its limit over time, the
notified changes, and links to the Trends and Requests views that show the requests behind an alert."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from core import monitor_rules as mr
from data_access.errors import DataAccessError
from ui import alert_charts, data, downloads

st.title("Alerts")
st.caption(
    "The rules in the monitors file, as the monitors job last evaluated them (`python -m jobs.monitors`, and after "
    "every scoring run). Each rule uses its own window and filters, not the sidebar's. A rule notifies its "
    "webhooks once when it starts firing and once when it resolves."
)

RULE_COLUMNS = ("status", "severity", "rule", "condition", "value", "limit_value", "samples", "since", "Trends",
                "Requests")  # fmt: skip
TRANSITION_COLUMNS = ("evaluated_at", "rule", "previous_state", "state", "value", "limit_value", "samples",
                      "delivered", "webhooks", "attempts", "detail")  # fmt: skip

rule_file = data.monitor_rules()
for problem in rule_file.problems:
    st.warning(f"{problem.line()}. This rule is skipped; the others run.", icon="⚠️")
rules = {rule.name: rule for rule in rule_file.rules}

try:
    states = data.fetch("alerts.alert_states")
except DataAccessError:
    st.info(
        "No evaluation has been recorded yet. Run `python -m jobs.monitors` (or the scoring job, which evaluates "
        f"the rules after each run). {len(rules)} rule(s) are configured.",
        icon="ℹ️",
    )
    configured = pd.DataFrame(
        [{"rule": r.name, "kind": r.kind, "severity": r.severity, "condition": r.describe()} for r in rules.values()]
    )
    st.dataframe(configured, hide_index=True, width="stretch")
    downloads.csv_button(configured, "alert-rules", "Download rules (CSV)")
    st.stop()


def links(row: pd.Series) -> dict[str, str | None]:
    rule = rules.get(row["rule"])
    if rule is None or pd.isna(row["window_start"]):
        return {"Trends": None, "Requests": None}
    return mr.view_links(rule, row["window_start"].to_pydatetime(), row["window_end"].to_pydatetime())


current = states.data.copy()
current["condition"] = [rules[n].describe() if n in rules else "(no longer in the rules file)" for n in current["rule"]]
current["kind"] = [rules[n].kind if n in rules else "" for n in current["rule"]]
current["status"] = [f"{alert_charts.STATE_ICONS.get(s, '')} {s}" for s in current["state"]]
current = current.join(pd.DataFrame([links(row) for _, row in current.iterrows()], index=current.index))
never = [name for name in rules if name not in set(current["rule"])]

counts = current["state"].value_counts()
cards = st.columns(4)
for card, state in zip(cards, mr.STATES, strict=True):
    card.metric(f"{alert_charts.STATE_ICONS[state]} {state.capitalize()}", int(counts.get(state, 0)))
newest = current["evaluated_at"].max()
st.caption(
    f"Last evaluated at {newest:%Y-%m-%d %H:%M} UTC (the evaluation's clock: windows end there)."
    + (f" Not evaluated yet: {', '.join(never)}." if never else "")
)

st.subheader("Rules")
st.dataframe(
    current,
    hide_index=True,
    width="stretch",
    column_order=RULE_COLUMNS,
    column_config={
        "status": st.column_config.TextColumn("State", width="small"),
        "severity": st.column_config.TextColumn("Severity", width="small"),
        "rule": st.column_config.TextColumn("Rule", width="medium"),
        "condition": st.column_config.TextColumn("Condition", width="large"),
        "value": st.column_config.NumberColumn("Value", format="%.4g", help="Canary rules: the effect size, worse > 0"),
        "limit_value": st.column_config.NumberColumn("Limit", format="%.4g"),
        "samples": st.column_config.NumberColumn(
            "Values",
            format="%d",
            help="How many values the figure rests on: for a scored metric the texts its scorer scored "
            "(a sampled scorer scores only its sample), not the requests; the details below give both",
        ),
        "since": st.column_config.DatetimeColumn("In this state since", format="YYYY-MM-DD HH:mm"),
        "Trends": st.column_config.LinkColumn("Trends", display_text="Trends ↗", width="small"),
        "Requests": st.column_config.LinkColumn("Requests", display_text="Requests ↗", width="small"),
    },
)
with st.expander("Details: what each value was computed from"):
    st.dataframe(current[["rule", "detail", "window_start", "window_end", "rule_digest"]], hide_index=True)
downloads.csv_button(current.drop(columns=["status"]), "alert-states", "Download rule states (CSV)")

# --- Value against limit over time ---------------------------------------------------------------------------
st.subheader("Value against limit")
days = st.select_slider("History shown", options=[1, 7, 30, 90], value=7, format_func=lambda d: f"{d} days",
                        key="alerts_days", bind="query-params")  # fmt: skip
history = data.fetch("alerts.alert_history", since=(newest - timedelta(days=days)).to_pydatetime())
columns = st.columns(3)
for position, (_, row) in enumerate(current.iterrows()):
    rows = history.data[history.data["rule"] == row["rule"]]
    with columns[position % 3]:
        title = f"{alert_charts.STATE_ICONS.get(row['state'], '')} {row['rule']}"
        st.plotly_chart(alert_charts.sparkline(rows, row["limit_value"], title), width="stretch",
                        config={"displayModeBar": False}, key=f"spark-{row['rule']}")  # fmt: skip
st.caption("Dashed line: the limit (for canary rules, the effect-size floor). Points are coloured by state.")
downloads.csv_button(history.data, "alert-history", "Download evaluation history (CSV)")

# --- Notified changes ----------------------------------------------------------------------------------------
st.subheader("Notified changes")
transitions = data.fetch("alerts.alert_transitions")
if transitions.data.empty:
    st.info("No rule has started firing or resolved yet.")
else:
    st.dataframe(
        transitions.data,
        hide_index=True,
        width="stretch",
        column_order=TRANSITION_COLUMNS,
        column_config={
            "evaluated_at": st.column_config.DatetimeColumn("At", format="YYYY-MM-DD HH:mm"),
            "previous_state": "From",
            "state": "To",
            "value": st.column_config.NumberColumn("Value", format="%.4g"),
            "limit_value": st.column_config.NumberColumn("Limit", format="%.4g"),
            "delivered": st.column_config.NumberColumn("Delivered", help="Webhooks that answered 2xx"),
            "webhooks": st.column_config.NumberColumn("Webhooks"),
            "attempts": st.column_config.NumberColumn("Attempts", help="Sends tried, retries included"),
        },
    )
    downloads.csv_button(transitions.data, "alert-transitions", "Download notified changes (CSV)")
data.show_sql(states, history, transitions, label="SQL for these tables")
