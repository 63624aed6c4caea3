"""API keys: random, shown once, stored as SHA-256 (keys carry 256 bits of entropy, so a slow hash adds nothing)."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from copilot.errors import Conflict, InvalidInput, NotFound
from copilot.store import audit
from copilot.store.models import ApiKeyRow, utcnow


class Role(StrEnum):
    moderator = "moderator"
    policy = "policy"
    auditor = "auditor"
    admin = "admin"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(s: Session, role: str, name: str, actor: str = "cli", key: str | None = None) -> str:
    try:
        role = Role(role)
    except ValueError:
        raise InvalidInput(f"unknown role {role!r} (valid: {', '.join(Role)})") from None
    key = key or "mc_" + secrets.token_urlsafe(32)
    row = ApiKeyRow(name=name, prefix=key[:10], key_hash=hash_key(key), role=role.value)
    s.add(row)
    s.flush()
    audit.append(s, actor, "key.create", "api_key", row.id, {"role": role.value, "name": name, "prefix": row.prefix})
    return key


def lookup(s: Session, key: str) -> ApiKeyRow | None:
    row = s.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(key))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row


def count_keys(s: Session) -> int:
    return int(s.scalar(select(func.count()).select_from(ApiKeyRow)) or 0)


def list_keys(s: Session) -> list[ApiKeyRow]:
    return list(s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id)))


def revoke_key(s: Session, key_id: int, actor: str = "cli") -> ApiKeyRow:
    """Revoke a key (kept, not deleted, so the audit trail still names it). A running service stops accepting it
    within COPILOT_AUTH_CACHE_S seconds."""
    row = s.get(ApiKeyRow, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id}")
    if row.revoked_at is not None:
        raise Conflict(f"API key {key_id} was already revoked at {row.revoked_at.isoformat()}")
    row.revoked_at = utcnow()
    audit.append(s, actor, "key.revoke", "api_key", row.id, {"role": row.role, "name": row.name, "prefix": row.prefix})
    return row
