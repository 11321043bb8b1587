"""Who is looking at the app, and whether we know it: the one place that decides it (no Streamlit here).

The app has no sign-in of its own. A viewer counts as signed in only when a party we trust established who they are:

- Streamlit's own OIDC sign-in (`st.login`, configured under `[auth]` in secrets.toml): `st.user` comes from a cookie
  Streamlit signed with `cookie_secret`, so a browser cannot forge it.
- Databricks Apps: its reverse proxy signs the viewer in to the workspace and forwards `X-Forwarded-Email`,
  `X-Forwarded-User`, `X-Forwarded-Preferred-Username` and, with user authorization switched on for the app,
  `X-Forwarded-Access-Token` (docs.databricks.com/dev-tools/databricks-apps/http-headers and .../auth: "These headers
  are only available when the app runs inside Databricks Apps"). Anyone who reaches the app's port some other way can
  send the same headers, and an environment variable can be set anywhere, so neither is proof on its own. We trust
  the identity only when the app runs with the variables the platform sets in every app (DATABRICKS_APP_NAME,
  DATABRICKS_APP_PORT, DATABRICKS_HOST; .../databricks-apps/system-env) AND the forwarded token, checked with the
  workspace itself (SCIM `Me`), names the same person as the forwarded e-mail. A token nobody can mint but the
  workspace is what makes the claim hold.

Everyone else is anonymous, with the reason, and may look but not change anything.

Whose permissions a *query* runs with is a second, separate decision (`query_credential`): with user authorization
(scope `sql`), Databricks Apps forwards the viewer's own OAuth token, and queries made with it obey that person's
Unity Catalog grants, row filters and column masks; without it, the app's service principal runs every query
(docs.databricks.com/dev-tools/databricks-apps/auth, "User authorization"). Databricks' guidance is to use the
forwarded token only for that viewer's requests and to fail closed when it is required but missing; a token is never
shown, logged or used as a cache key in clear: `Credential.key` is a keyed hash.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

from data_access.errors import DataAccessError

# Set by Databricks Apps in every app's environment (Databricks Apps system environment).
PLATFORM_VARIABLES = ("DATABRICKS_APP_NAME", "DATABRICKS_APP_PORT", "DATABRICKS_HOST")
TOKEN_HEADER = "x-forwarded-access-token"
EMAIL_HEADERS = ("x-forwarded-email", "x-forwarded-preferred-username", "x-forwarded-user")

NO_SIGN_IN = (
    "Nobody is signed in: this app has no sign-in of its own. Changes need a viewer signed in through Databricks "
    "Apps (with user authorization) or Streamlit's sign-in ([auth] in .streamlit/secrets.toml)."
)
NO_USER_TOKEN = (
    "Databricks Apps forwarded no user token, so the app cannot verify who you are. Switch on user authorization "
    "for this app (scope iam.current-user:read) to allow changes."
)
HEADERS_IGNORED = (
    "Identity headers arrived, but this app is not running in Databricks Apps, where only the platform's proxy sets "
    "them; they are ignored. " + NO_SIGN_IN
)


VIEWER_CREDENTIALS = ("auto", "viewer", "app")
ViewerCredentials = Literal["auto", "viewer", "app"]
NO_QUERY_TOKEN = (
    'This app runs queries with each viewer\'s own Databricks permissions (viewer_credentials = "viewer"), but '
    "Databricks Apps forwarded no token for you."
)
NO_QUERY_TOKEN_HINT = (
    "Switch on user authorization for the app with the scope sql (and iam.current-user:read), then reload; or set "
    "INFERENCE_EXPLORER_VIEWER_CREDENTIALS=auto to fall back to the app's service principal."
)
# Keys the hashes below: a hash seen in a cache key or a log cannot be matched against a guessed token elsewhere.
_HASH_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class Credential:
    """Whose permissions a warehouse query runs with: the app's own (`token` None) or a viewer's forwarded token."""

    token: str | None = field(default=None, repr=False)

    @property
    def is_viewer(self) -> bool:
        return self.token is not None

    @property
    def key(self) -> str:
        """Names the credential in cache keys, pool keys and logs: `app`, or a keyed hash of the viewer's token."""
        if self.token is None:
            return "app"
        return "viewer-" + hashlib.blake2b(self.token.encode(), key=_HASH_KEY, digest_size=16).hexdigest()


APP_CREDENTIAL = Credential()


def query_credential(headers: Mapping[str, str], environ: Mapping[str, str], mode: str) -> Credential:
    """The credential this session's warehouse queries run with.

    `mode` is the viewer_credentials setting: `app` always uses the app's own identity; `auto` uses the viewer's
    forwarded token when Databricks Apps forwards one, else the app's; `viewer` requires the viewer's token and
    raises DataAccessError without it. The header counts only inside Databricks Apps, where only the platform's
    proxy sets it; the warehouse itself then checks the token."""
    if mode == "app":
        return APP_CREDENTIAL
    lowered = {str(key).lower(): str(value).strip() for key, value in headers.items()}
    token = lowered.get(TOKEN_HEADER) if in_databricks_apps(environ) else None
    if token:
        return Credential(token)
    if mode == "viewer":
        raise DataAccessError(NO_QUERY_TOKEN, NO_QUERY_TOKEN_HINT)
    return APP_CREDENTIAL


@dataclass(frozen=True)
class Viewer:
    """The person using this session: a verified name and how we know it, or anonymous with the reason."""

    name: str | None
    how: str
    reason: str = ""
    # The viewer's forwarded token when Databricks Apps signed them in: a rollback acts with it, so the workspace
    # decides whether this person may change the endpoint. Never shown, compared or logged.
    token: str | None = field(default=None, repr=False, compare=False)

    @property
    def signed_in(self) -> bool:
        return bool(self.name)

    @property
    def audit_name(self) -> str:
        return f"{self.name} ({self.how})" if self.name else f"anonymous ({self.reason})"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.how})" if self.name else "nobody signed in"


def anonymous(reason: str) -> Viewer:
    return Viewer(None, "anonymous", reason)


def in_databricks_apps(environ: Mapping[str, str]) -> bool:
    return all(environ.get(name) for name in PLATFORM_VARIABLES)


def identify(
    user_info: Mapping[str, Any],
    headers: Mapping[str, str],
    environ: Mapping[str, str],
    workspace_user: Callable[[str], str],
) -> Viewer:
    """Decide who the viewer is. `user_info` is `st.user`, `headers` the session's request headers, and
    `workspace_user(token)` asks the workspace whose token it is (raising DataAccessError when it cannot say)."""
    if user_info.get("is_logged_in"):
        name = str(user_info.get("email") or user_info.get("preferred_username") or user_info.get("sub") or "")
        if name.strip():
            return Viewer(name.strip(), "signed in with Streamlit")
    lowered = {str(key).lower(): str(value).strip() for key, value in headers.items()}
    claimed = next((lowered[h] for h in EMAIL_HEADERS if lowered.get(h)), "")
    if not in_databricks_apps(environ):
        return anonymous(HEADERS_IGNORED if claimed or lowered.get(TOKEN_HEADER) else NO_SIGN_IN)
    token = lowered.get(TOKEN_HEADER)
    if not token:
        return anonymous(NO_USER_TOKEN)
    try:
        verified = workspace_user(token).strip()
    except DataAccessError as error:
        return anonymous(f"The workspace could not confirm who you are: {error.message}")
    forwarded_email = lowered.get("x-forwarded-email", "")
    if forwarded_email and forwarded_email.lower() != verified.lower():
        return anonymous("The forwarded e-mail does not belong to the forwarded token's user; nothing is trusted.")
    return Viewer(verified, "signed in with Databricks Apps", token=token)


def scim_me(host: str, token: str, timeout_s: float, ca_file: str | None = None) -> str:
    """The user name (e-mail) the workspace says `token` belongs to: GET /api/2.0/preview/scim/v2/Me, bounded."""
    url = f"{workspace_url(host)}/api/2.0/preview/scim/v2/Me"  # the operator's DATABRICKS_HOST, never a viewer's input
    try:
        reply = requests.get(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=(timeout_s, timeout_s), verify=ca_file or True
        )
    except requests.RequestException as error:
        raise DataAccessError(f"{host} did not answer ({type(error).__name__}).") from None
    if reply.status_code != 200:
        raise DataAccessError(f"{host} refused the forwarded token (HTTP {reply.status_code}).")
    try:
        body = reply.json()
        name = body.get("userName") or (body.get("emails") or [{}])[0].get("value")
    except (ValueError, AttributeError, IndexError):
        name = None
    if not name:
        raise DataAccessError(f"{host} answered without a user name.")
    return str(name)


def workspace_url(host: str) -> str:
    """The workspace's base URL from a host setting with or without its scheme (DATABRICKS_HOST takes both)."""
    return host.rstrip("/") if host.startswith(("https://", "http://")) else f"https://{host.rstrip('/')}"
