"""Dependencies as type aliases (RuntimeDep, Principal) so tests and routes read the same way."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from copilot.errors import Forbidden, Unauthorized
from copilot.runtime import Runtime
from copilot.store import keys as keystore

_bearer = HTTPBearer(auto_error=False, description="API key created with `copilot keys create --role ROLE`")


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


@dataclass(frozen=True)
class Caller:
    name: str
    role: str
    key_id: int


class _AuthCache:
    """Verified keys for a few seconds (by hash), so a request does not pay a database read and a worker-thread hop
    for auth. Unknown keys are never cached: a key created a moment ago works at once; a revoked one within ttl."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, Caller]] = {}

    def get(self, key_hash: str, ttl: float) -> Caller | None:
        with self._lock:
            hit = self._items.get(key_hash)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < ttl else None

    def put(self, key_hash: str, caller: Caller) -> None:
        with self._lock:
            if len(self._items) > 10_000:  # bounded: keys are few; this only guards against a flood of valid-looking ones
                self._items.clear()
            self._items[key_hash] = (time.monotonic(), caller)


async def _caller(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Caller:
    rt: Runtime = request.app.state.runtime
    key = creds.credentials if creds else request.headers.get("x-api-key")
    if not key:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>' (create one with `copilot keys create --role moderator`)")
    cache: _AuthCache | None = getattr(request.app.state, "auth_cache", None)
    if cache is None:
        cache = request.app.state.auth_cache = _AuthCache()
    digest = keystore.hash_key(key)
    caller = cache.get(digest, rt.settings.auth_cache_s)
    if caller is not None:
        return caller

    def lookup() -> Caller | None:
        with rt.database.session() as s:
            row = keystore.lookup(s, key)
            return None if row is None else Caller(name=f"{row.name}#{row.id}", role=row.role, key_id=row.id)

    caller = await asyncio.to_thread(lookup)
    if caller is None:
        raise Unauthorized("the API key is unknown or revoked")
    cache.put(digest, caller)
    return caller


def require(*roles: str):  # type: ignore[no-untyped-def]
    """Dependency that admits only the given roles (admin is always admitted)."""
    allowed = {*roles, "admin"}

    async def check(caller: Annotated[Caller, Depends(_caller)]) -> Caller:  # async: no worker-thread hop for a set lookup
        if caller.role not in allowed:
            raise Forbidden(f"role {caller.role!r} may not call this endpoint (allowed: {', '.join(sorted(allowed))})")
        return caller

    return Depends(check)


# Who may do what. One table, so the role matrix test and the docs read from the same place.
ANY_ROLE = ("moderator", "policy", "auditor")
MODERATE = ("moderator",)
READ_CASES = ("moderator", "policy", "auditor")
AUDIT = ("auditor",)
