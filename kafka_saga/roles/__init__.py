"""The long-running roles, by name. The supervisor starts them in ``ROLE_ORDER``."""

from __future__ import annotations

from .aggregator import AggregatorRole
from .base import Role, RoleContext
from .demo import DemoRole
from .dlq import DlqRole
from .orchestrator import OrchestratorRole
from .query import QueryRole
from .tracker import TrackerRole

ROLES: dict[str, type[Role]] = {
    AggregatorRole.name: AggregatorRole,
    DemoRole.name: DemoRole,
    DlqRole.name: DlqRole,
    OrchestratorRole.name: OrchestratorRole,
    QueryRole.name: QueryRole,
    TrackerRole.name: TrackerRole,
}

__all__ = ["ROLES", "Role", "RoleContext"]
