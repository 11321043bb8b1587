"""How a requester (the user or service principal that called the endpoint) is named on every page."""

from __future__ import annotations

import hashlib

NOT_LOGGED = "(not logged)"  # rows without a requester: legacy payload tables do not log who called


def requester_label(identity: object, hashed: bool) -> str:
    """The identity as logged, or with `hash_requesters` a stable short hash ("requester-" + 10 hex digits of its
    SHA-256), the same in every session and on every page, for teams that may not show e-mail addresses."""
    if not isinstance(identity, str) or not identity:
        return NOT_LOGGED
    if not hashed:
        return identity
    return "requester-" + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:10]


def identity_of(label: str, identities: list[str], hashed: bool) -> str | None:
    """The identity a label stands for among those in the data (a hash is only reversed by looking it up)."""
    return next((identity for identity in identities if requester_label(identity, hashed) == label), None)
