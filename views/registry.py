"""Model registry: every version, what changed between two of them, and a guarded rollback of the serving alias."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from core.catalog import METRICS
from core.sampling import slot_scorers
from core.scorers import scorer_caption
from core.versions import version_label
from data_access import registry, text_caps
from data_access.errors import DataAccessError
from data_access.registry import audit, rollback, store
from ui import columns, data, downloads, filters, registry_data, sampling
from ui import registry_view as view
from ui.comparison import compare_on_traffic

RESULT_KEY = "registry_rollback_result"

selected, grain = filters.current()
settings = data.settings()
model = settings.model_name
st.title("Model registry")
st.caption(
    "Every registered version of the served model, what changed between two of them — in the registry and in "
    "live traffic — and a guarded rollback of the serving alias."
)

try:
    config = registry_data.config()
except store.MissingLocalStoreError as missing:
    data.show_error(missing)
    if st.button("Build the demo registry", icon="🧱", key="registry_build"):
        with st.spinner("Logging the demo model versions to a local MLflow store (about ten seconds)…"):
            registry_data.or_stop(lambda: store.build_local_store(settings))
        registry_data.clear()
        st.rerun()
    st.stop()
except DataAccessError as error:
    data.show_error(error)
    st.stop()

versions = registry_data.or_stop(registry_data.versions)
endpoint_text = f" · serving endpoint **{settings.serving_endpoint}**" if settings.serving_endpoint else ""
st.caption(f"Model **{model}** in {registry_data.describe(config)}{endpoint_text}")
if versions.empty:
    st.warning(f"{model} has no versions in this registry yet.")
    st.stop()

numbers = [int(v) for v in versions["version"]]  # newest first
aliases_of = {int(v): list(a or []) for v, a in zip(versions["version"], versions["aliases"], strict=True)}


def version_choice(version: int) -> str:
    aliases = view.aliases_text(aliases_of.get(version))
    return f"{version_label(version)} · {aliases}" if aliases else version_label(version)


# --- Versions -----------------------------------------------------------------------------------------------
st.subheader("Versions")
shown_versions = view.versions_display(versions)
st.dataframe(
    view.highlight_serving(shown_versions),
    hide_index=True,
    width="stretch",
    column_config={
        "version": st.column_config.NumberColumn("Version", format="%d"),
        "created": st.column_config.DatetimeColumn("Created (UTC)", format="YYYY-MM-DD HH:mm"),
        "updated": st.column_config.DatetimeColumn("Updated (UTC)", format="YYYY-MM-DD HH:mm"),
        "status": "Status",
        "aliases": st.column_config.TextColumn(
            "Aliases", width="medium", help="⭐ champion is the version being served."
        ),
        "run_name": "Run",
        "run_id": "Run id",
        "source": "Source",
        "description": st.column_config.TextColumn("Description", width="large"),
        "serving": None,
    },
)
st.caption(f"The highlighted row is the version **{view.SERVING_ALIAS}** points to: the one being served.")
downloads.csv_button(shown_versions, "registry-versions", "Download versions (CSV)")

# --- Two versions side by side ----------------------------------------------------------------------------
st.subheader("Compare two versions")
pair = view.default_pair(versions)
if pair is None:
    st.info(f"{model} has a single version, so there is nothing to compare yet.")
else:
    left, right = st.columns(2)
    old = left.selectbox(
        "Older version", numbers, index=numbers.index(pair[0]), key="registry_old", bind="query-params",
        format_func=version_label,
    )  # fmt: skip
    new = right.selectbox(
        "Newer version", numbers, index=numbers.index(pair[1]), key="registry_new", bind="query-params",
        format_func=version_label,
    )  # fmt: skip
    left.caption(version_choice(old))
    right.caption(version_choice(new))
    if old == new:
        st.info("Pick two different versions to see what changed.")
    else:
        if old > new:
            st.caption(f"{version_label(old)} is newer than {version_label(new)}: changes read from left to right.")
        compared = registry_data.or_stop(lambda: registry_data.comparison(old, new))
        for problem in compared.problems:
            st.warning(problem)
        st.markdown("**In the registry** — signature, parameters, metrics and requirements of the training runs")
        summary = view.change_summary(compared.changes)
        st.dataframe(summary, hide_index=True, width="content")
        if compared.changes.empty:
            st.info(
                f"{version_label(old)} and {version_label(new)} have the same signature, run parameters, run metrics "
                "and requirements."
            )
        else:
            changes = view.changes_display(compared.changes)
            st.dataframe(
                changes,
                hide_index=True,
                width="stretch",
                column_config={
                    "old": version_label(old),
                    "new": version_label(new),
                    "difference": st.column_config.NumberColumn("Difference", format="%+.4g"),
                    "relative_change": st.column_config.NumberColumn("Relative", format="percent"),
                },
            )
            downloads.csv_button(changes, f"registry-changes-v{old}-v{new}", "Download registry differences (CSV)")

        # --- The same two versions in live traffic ---------------------------------------------------------
        old_s, new_s = str(old), str(new)
        st.markdown(f"**In live traffic** — {version_label(old)} and {version_label(new)} in the inference table")
        pair_filters = replace(selected, versions=(old_s, new_s))
        span = f"{selected.start} to {selected.end}" if selected.start else "all dates"
        where = ", ".join(selected.endpoints) if selected.endpoints else "all endpoints"
        st.caption(
            f"Over the sidebar's dates ({span}) and endpoints ({where}); the sidebar's version filter does not apply "
            "here. Same statistics as the Overview page."
        )
        use_rollups = data.rollups_usable()
        totals = registry_data.fetch_or_none(
            "queries.versions.version_totals", filters=pair_filters, from_rollups=use_rollups
        )
        silent = view.versions_without_traffic(totals.data, [old_s, new_s]) if totals is not None else []
        if totals is None:
            pass  # the error is shown; the registry and the rollback below still work
        elif silent:
            st.info(
                " and ".join(version_label(v) for v in silent)
                + " served no requests in the selected dates and endpoints, so live traffic cannot compare these two. "
                "Widen the dates in the sidebar or pick versions that served (the inference table has "
                "6 and 7 in the demo)."
            )
        else:
            controls = st.columns(2)
            threshold = controls[0].slider(
                "Toxicity threshold", 0.05, 0.95, 0.5, 0.05, key="registry_toxicity",
                help="A response counts as toxic when its toxicity score is at or above this value.",
            )  # fmt: skip
            overlap_only = controls[1].toggle(
                "Compare only while both served", value=True, key="registry_overlap",
                help="Restrict to the days both versions served (a canary), so the difference is not mixed up "
                "with changes in traffic over time.",
            )  # fmt: skip
            compared = compare_on_traffic(
                registry_data.fetch_or_none, pair_filters, totals, old_s, new_s, threshold, overlap_only, use_rollups
            )
            frames = [totals, *(compared.frames if compared is not None else ())]
            if compared is not None:
                scorers, table, tests = compared.result.scorers, compared.result.table, compared.result.tests
                deltas = view.inference_deltas(tests, old_s, new_s)
                figures = view.figures_side_by_side(table, old_s, new_s)
                chart_col, table_col = st.columns([1, 1.3])
                chart_col.plotly_chart(view.delta_chart(deltas, old_s, new_s), width="stretch")
                chart_col.caption(
                    "Green: significantly lower (better); red: significantly higher (worse); grey: no clear or a "
                    "negligible difference (Holm-adjusted p < 0.05 and a non-negligible effect size)."
                )
                table_col.dataframe(
                    figures,
                    hide_index=True,
                    width="stretch",
                    column_config=columns.side_by_side(version_label(old_s), version_label(new_s)),
                )
                downloads.csv_button(figures, f"registry-traffic-v{old}-v{new}", "Download figures (CSV)")
                st.dataframe(
                    deltas.drop(columns=["key"]),
                    hide_index=True,
                    width="stretch",
                    column_config=columns.side_by_side(version_label(old_s), version_label(new_s))
                    | columns.test_outcome(),
                )
                downloads.csv_button(deltas, f"registry-tests-v{old}-v{new}", "Download tests (CSV)")
                st.caption(
                    "Rates: two-proportion z-test; latency, tokens, readability and perplexity: Mann-Whitney U on "
                    "the engine's fine histograms; p-values Holm-adjusted across the tests. Scorers: "
                    + "; ".join(
                        f"{METRICS[m].label}: {scorer_caption(s)}" for m, s in scorers.items() if m != "prompt_toxicity"
                    )
                    + "."
                )
                if compared.coverage is not None:  # sampled scorers: how many requests the figures rest on
                    sampling.captions(compared.coverage.data, [old_s, new_s], scorers=slot_scorers(scorers))
                    frames.append(compared.coverage)
            with st.expander("Show SQL"):
                for sql in dict.fromkeys(f.sql for f in frames if f is not None):  # each query once
                    st.code(sql, language="sql")

# --- One version in detail --------------------------------------------------------------------------------
st.subheader("One version in detail")
serving_now = view.alias_target(versions, view.SERVING_ALIAS)
chosen = st.selectbox(
    "Version", numbers, index=numbers.index(serving_now) if serving_now in numbers else 0, key="registry_detail",
    bind="query-params", format_func=version_label,
)  # fmt: skip
detail = registry_data.or_stop(lambda: registry_data.detail(chosen))
for problem in detail.problems:
    st.warning(problem)
st.markdown(
    f"**{version_label(detail.version)}** · status **{detail.status}** · aliases "
    f"**{view.aliases_text(detail.aliases) or 'none'}** · Python **{detail.python_version or '–'}** · MLflow "
    f"**{detail.mlflow_version or '–'}** · training run **{detail.run_name or '–'}**"
)
if detail.description:
    st.markdown(f"> {text_caps.shown_text(detail.description, 2_000).text}")
st.caption(f"Source: `{detail.source}`" + (f" · run `{detail.run_id}`" if detail.run_id else ""))
if detail.tags:
    st.caption("Tags: " + ", ".join(f"`{key}` = {value}" for key, value in sorted(detail.tags.items())))
mlmodel_tab, signature_tab, artifacts_tab, run_tab = st.tabs(["MLmodel", "Signature", "Artifacts", "Training run"])
with mlmodel_tab:
    st.markdown("**Flavors**")
    st.dataframe(view.flavors_frame(detail.flavors), hide_index=True, width="stretch")
    st.markdown("**Requirements** (requirements.txt)")
    if detail.requirements:
        requirements = view.requirements_frame(detail.requirements)
        st.dataframe(requirements, hide_index=True, width="stretch")
        downloads.csv_button(requirements, f"registry-v{chosen}-requirements", "Download requirements (CSV)")
    else:
        st.info("No requirements recorded for this version.")
    if detail.mlmodel:
        with st.expander("The MLmodel file"):
            st.json(detail.mlmodel, expanded=False)
with signature_tab:
    if detail.signature_inputs.empty and detail.signature_outputs.empty:
        st.info("This version was logged without a signature, so callers get no input or output schema.")
    for title, frame, what in (
        ("Inputs", detail.signature_inputs, "inputs"),
        ("Outputs", detail.signature_outputs, "outputs"),
        ("Inference parameters", detail.signature_params, "params"),
    ):
        st.markdown(f"**{title}**")
        if frame.empty:
            st.caption(f"No {title.lower()} in the signature.")
        else:
            st.dataframe(view.text_frame(frame), hide_index=True)
            downloads.csv_button(frame, f"registry-v{chosen}-signature-{what}", f"Download {title.lower()} (CSV)")
with artifacts_tab:
    if detail.artifacts.empty:
        st.info("No artifacts could be listed for this version.")
    else:
        tree = view.artifact_tree_display(detail.artifacts)
        st.dataframe(tree, hide_index=True, width="stretch", column_config={"size_bytes": None})
        downloads.csv_button(tree, f"registry-v{chosen}-artifacts", "Download artifact list (CSV)")
with run_tab:
    params_col, metrics_col = st.columns(2)
    params = view.mapping_frame(detail.params, "value")
    metrics = view.mapping_frame(detail.metrics, "value")
    params_col.markdown("**Parameters**")
    if params.empty:
        params_col.caption("No parameters logged.")
    else:
        params_col.dataframe(params, hide_index=True, width="stretch")
        with params_col:
            downloads.csv_button(params, f"registry-v{chosen}-params", "Download parameters (CSV)")
    metrics_col.markdown("**Metrics** (offline evaluation of the run)")
    if metrics.empty:
        metrics_col.caption("No metrics logged.")
    else:
        metrics_col.dataframe(
            metrics,
            hide_index=True,
            width="stretch",
            column_config={"value": st.column_config.NumberColumn(format="%.4g")},
        )
        with metrics_col:
            downloads.csv_button(metrics, f"registry-v{chosen}-metrics", "Download metrics (CSV)")

# --- Rollback -----------------------------------------------------------------------------------------------
st.subheader(f"Roll back {view.SERVING_ALIAS}")
rollback_settings = registry_data.rollback_settings()
last = st.session_state.get(RESULT_KEY)
if last is not None:
    headline = {"success": "Rolled back", "refused": "Refused — nothing was changed", "failed": "Failed"}
    text = f"**{headline.get(last.outcome, last.outcome)}.** {last.message}"
    {"success": st.success, "refused": st.warning}.get(last.outcome, st.error)(text)

current = registry_data.or_stop(registry_data.serving_version)
if settings.serving_endpoint:
    endpoint_note = (
        f"Serving endpoint **{settings.serving_endpoint}** is updated too; it keeps serving the current version "
        "until the chosen one is ready, and the alias is put back if the endpoint update fails."
    )
else:
    endpoint_note = (
        "No serving endpoint is configured (INFERENCE_EXPLORER_SERVING_ENDPOINT, or serving_endpoint under [app]), "
        "so only the alias moves."
    )
viewer = registry_data.current_viewer() if rollback_settings.enabled else None
if not rollback_settings.enabled:
    st.info(f"Rollback is switched off, so this page is read-only. {registry.ENABLE_ROLLBACK_HINT}", icon="🔒")
    st.button("Roll back", disabled=True, key="rollback_disabled", help="Switched off in the app's configuration.")
elif viewer is None or not viewer.signed_in:
    reason = viewer.reason if viewer else ""
    st.warning(f"**Rollback needs a signed-in viewer.** {reason}", icon="🔒")
    st.button("Roll back", disabled=True, key="rollback_disabled", help="Only a signed-in viewer may roll back.")
    if registry_data.sign_in_configured() and st.button("Sign in", icon=":material/login:", key="sign_in"):
        st.login()
elif current is None:
    st.warning(f"The alias {view.SERVING_ALIAS} is not set on {model}, so there is nothing to roll back from.")
else:
    targets = view.rollback_targets(versions, current)
    if not targets:
        st.info(f"{view.SERVING_ALIAS} points to {version_label(current)}; no earlier READY version exists.")
    else:
        default_target = view.default_rollback_target(targets, versions)
        target = st.selectbox(
            f"Move {view.SERVING_ALIAS} from {version_label(current)} to",
            targets,
            index=targets.index(default_target) if default_target in targets else 0,
            key="rollback_target",
            format_func=version_choice,
        )
        phrase = rollback.confirmation_phrase(model, current, target)
        st.markdown(
            f"This moves **{view.SERVING_ALIAS}** from **{version_label(current)}** to **{version_label(target)}**. "
            f"{endpoint_note}"
        )
        permissions = (
            "with your own Databricks permissions: the workspace decides whether you may make this change"
            if viewer.token
            else "with the app's credentials"
        )
        st.caption(f"Acting as {viewer.label}, {permissions}. Every attempt is written to the audit log below.")
        st.markdown("To confirm, type exactly:")
        st.code(phrase, language=None)
        with st.form("rollback_form", clear_on_submit=True):
            typed = st.text_input("Confirmation", key="rollback_confirmation", placeholder="the phrase above")
            submitted = st.form_submit_button(
                f"Roll back {view.SERVING_ALIAS} from {version_label(current)} to {version_label(target)}",
                type="primary",
                icon="⏪",
                key="rollback_submit",
            )
        if submitted:
            with st.spinner("Rolling back…"):
                result = rollback.rollback(
                    model,
                    target,
                    confirmation=typed,
                    viewer=viewer,
                    config=config,
                    settings=rollback_settings,
                )
            st.session_state[RESULT_KEY] = result
            registry_data.clear()
            st.rerun()

# --- Audit log ----------------------------------------------------------------------------------------------
st.subheader("Rollback audit log")
try:
    audit_log = audit.read_audit_log(rollback_settings.audit_log_path)
except OSError as error:
    st.warning(f"The audit log {rollback_settings.audit_log_path} cannot be read ({error.strerror or error}).")
else:
    if audit_log.empty:
        st.caption(f"No rollback attempts yet. They are recorded in `{rollback_settings.audit_log_path}`.")
    else:
        shown_audit = view.audit_display(audit_log)
        st.dataframe(
            shown_audit,
            hide_index=True,
            width="stretch",
            column_config=columns.ROLLBACK_AUDIT,
        )
        st.caption(f"Newest first, from `{rollback_settings.audit_log_path}`.")
        downloads.csv_button(shown_audit, "rollback-audit-log", "Download audit log (CSV)")
