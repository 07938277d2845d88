"""The long-running roles, by name, in the start order the topology declares."""

from __future__ import annotations

from ..core.topology import ROLE_NAMES
from .aggregator import AggregatorRole
from .base import Role, RoleContext
from .demo import DemoRole
from .dlq import DlqRole
from .inventory import InventoryRole
from .orchestrator import OrchestratorRole
from .query import QueryRole
from .tracker import TrackerRole

_CLASSES: dict[str, type[Role]] = {cls.name: cls for cls in (
    AggregatorRole, DemoRole, DlqRole, InventoryRole, OrchestratorRole, QueryRole, TrackerRole)}
# in the declared start order (tests/unit/test_topology.py: the same roles on both sides)
ROLES: dict[str, type[Role]] = {name: _CLASSES[name] for name in ROLE_NAMES}

__all__ = ["ROLES", "Role", "RoleContext"]
