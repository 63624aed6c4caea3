"""Dependencies as type aliases (RuntimeDep, Principal) so tests and routes read the same way."""

from __future__ import annotations

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


def _caller(request: Request, rt: RuntimeDep, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Caller:
    key = creds.credentials if creds else request.headers.get("x-api-key")
    if not key:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>' (create one with `copilot keys create --role moderator`)")
    with rt.database.session() as s:
        row = keystore.lookup(s, key)
        if row is None:
            raise Unauthorized("the API key is unknown or revoked")
        return Caller(name=f"{row.name}#{row.id}", role=row.role, key_id=row.id)


def require(*roles: str):  # type: ignore[no-untyped-def]
    """Dependency that admits only the given roles (admin is always admitted)."""
    allowed = {*roles, "admin"}

    def check(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
        if caller.role not in allowed:
            raise Forbidden(f"role {caller.role!r} may not call this endpoint (allowed: {', '.join(sorted(allowed))})")
        return caller

    return Depends(check)


# Who may do what. One table, so the role matrix test and the docs read from the same place.
ANY_ROLE = ("moderator", "policy", "auditor")
MODERATE = ("moderator",)
READ_CASES = ("moderator", "policy", "auditor")
AUDIT = ("auditor",)
