"""Who may change things: the identity decision with the headers a request carries, and the workspace's own answer
about a forwarded token over the wire (a loopback HTTPS server standing in for the workspace's SCIM API)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from data_access import identity
from data_access.errors import DataAccessError
from testkit.wire import Recorded, Reply, WireServer, serve

PLATFORM = {"DATABRICKS_APP_NAME": "inference-explorer", "DATABRICKS_APP_PORT": "8000"}
ALICE_TOKEN = "alice-oauth-token-0001"


@pytest.fixture
def workspace() -> Iterator[WireServer]:
    """Answers SCIM Me for Alice's token, 401 for any other."""

    def answer(request: Recorded) -> Reply:
        if request.path != "/api/2.0/preview/scim/v2/Me":
            return Reply(404)
        if request.headers.get("Authorization") != f"Bearer {ALICE_TOKEN}":
            return Reply(401, b'{"error_code": "UNAUTHENTICATED"}')
        return Reply(200, json.dumps({"userName": "alice@example.com", "id": "42"}).encode())

    with serve(answer, tls=False) as server:
        yield server


def _decide(server: WireServer, headers: dict[str, str], env: dict[str, str] | None = None) -> identity.Viewer:
    environ = {**PLATFORM, "DATABRICKS_HOST": f"http://{server.host}"} if env is None else env

    def ask(token: str) -> str:
        return identity.scim_me(f"http://{server.host}", token, 5)

    return identity.identify({}, headers, environ, ask)


def test_nobody_signed_in_is_anonymous_with_the_reason() -> None:
    viewer = identity.identify({}, {"Host": "localhost:8501"}, {}, lambda token: pytest.fail("no token to check"))
    assert not viewer.signed_in and "no sign-in of its own" in viewer.reason
    assert viewer.audit_name.startswith("anonymous")


def test_streamlit_sign_in_is_trusted() -> None:
    viewer = identity.identify({"is_logged_in": True, "email": "bob@example.com"}, {}, {}, lambda t: "x")
    assert (viewer.signed_in, viewer.name, viewer.how) == (True, "bob@example.com", "signed in with Streamlit")
    assert not identity.identify({"is_logged_in": False, "email": "bob@example.com"}, {}, {}, lambda t: "x").signed_in


def test_spoofed_header_outside_databricks_apps_is_ignored(workspace: WireServer) -> None:
    headers = {"X-Forwarded-Email": "admin@example.com", "X-Forwarded-Access-Token": ALICE_TOKEN}
    viewer = _decide(workspace, headers, env={"DATABRICKS_APP_NAME": "set-by-hand"})  # not the platform's set
    assert not viewer.signed_in and "ignored" in viewer.reason
    assert workspace.requests == []  # the token was not even sent anywhere


def test_spoofed_email_without_a_token_in_databricks_apps_is_not_trusted(workspace: WireServer) -> None:
    viewer = _decide(workspace, {"X-Forwarded-Email": "admin@example.com"})
    assert not viewer.signed_in and "user authorization" in viewer.reason


def test_spoofed_email_next_to_someone_elses_token_is_refused(workspace: WireServer) -> None:
    viewer = _decide(workspace, {"X-Forwarded-Email": "admin@example.com", "X-Forwarded-Access-Token": ALICE_TOKEN})
    assert not viewer.signed_in and "does not belong" in viewer.reason


def test_a_made_up_token_is_refused_by_the_workspace(workspace: WireServer) -> None:
    viewer = _decide(workspace, {"X-Forwarded-Email": "admin@example.com", "X-Forwarded-Access-Token": "forged"})
    assert not viewer.signed_in and "HTTP 401" in viewer.reason and "forged" not in viewer.reason


def test_the_platform_identity_verified_with_the_viewers_token(workspace: WireServer) -> None:
    headers = {"x-forwarded-email": "Alice@Example.com", "x-forwarded-access-token": ALICE_TOKEN}
    viewer = _decide(workspace, headers)
    assert (viewer.signed_in, viewer.name, viewer.how) == (True, "alice@example.com", "signed in with Databricks Apps")
    (asked,) = workspace.requests
    assert asked.method == "GET" and asked.headers["Authorization"] == f"Bearer {ALICE_TOKEN}"


def test_a_silent_workspace_is_bounded() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog) and never answers
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(DataAccessError, match="did not answer"):
            identity.scim_me(host, ALICE_TOKEN, 0.5)
