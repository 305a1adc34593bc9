"""Caller authentication: `Authorization: Bearer <key>` -> tenant id.

Every key is compared in constant time against every configured key, so
neither a match nor its position leaks through timing. Keys never reach logs.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from service.api.rate_limit import spend
from service.errors import Unauthenticated
from service.resources import Resources

LOCAL_TENANT = "local"
# The caller's tenant id, injected into every handler that declares `tenant: Tenant`.
Tenant = NamedDependency[str]
# The process's resources, for handlers that declare `resources: Injected`.
Injected = NamedDependency[Resources]


def tenant_for_key(api_keys: dict[str, str], presented: str) -> str | None:
    found: str | None = None
    presented_bytes = presented.encode()
    for key, tenant in api_keys.items():
        if hmac.compare_digest(key.encode(), presented_bytes):
            found = tenant
    return found


async def provide_tenant(request: Request[Any, Any, Any], resources: Injected) -> str:
    # Taking `resources` as a dependency puts the two in a chain rather than side by
    # side: Litestar resolves side-by-side async dependencies in a task group, a
    # cost on every authenticated request.
    if resources.settings.auth_disabled:
        await spend(resources, LOCAL_TENANT)
        return LOCAL_TENANT
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthenticated("Send your API key as 'Authorization: Bearer <key>'")
    tenant = tenant_for_key(resources.settings.api_keys, credentials.strip())
    if tenant is None:
        raise Unauthenticated("The API key is not valid", invalid_token=True)
    await spend(resources, tenant)
    return tenant


def provide_resources(request: Request[Any, Any, Any]) -> Resources:
    """The process's resources, injected into handlers that declare `resources: Resources`."""
    resources: Resources = request.app.state.resources
    return resources
