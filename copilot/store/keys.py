"""API keys: random, shown once, stored as SHA-256 (keys carry 256 bits of entropy, so a slow hash adds nothing)."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from copilot.errors import InvalidInput
from copilot.store import audit
from copilot.store.models import ApiKeyRow


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
