"""The long-running roles, by name. The supervisor starts them in ``ROLE_ORDER``."""

from __future__ import annotations

from .aggregator import AggregatorRole
from .base import Role, RoleContext
from .dlq import DlqRole
from .query import QueryRole

ROLES: dict[str, type[Role]] = {
    AggregatorRole.name: AggregatorRole,
    DlqRole.name: DlqRole,
    QueryRole.name: QueryRole,
}

__all__ = ["ROLES", "Role", "RoleContext"]
