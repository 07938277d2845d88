"""The tracker's validation rules over ``orders.events``. Pure, no I/O.

:class:`TrackerRules` holds the state of **one partition** of ``orders.events`` (events are
keyed by user, so every event of a user, of each of their orders and of each of their sagas,
is on one partition). ``observe(event)`` returns the rules the event breaks *for the first time*:

* ``price_integrity`` (reason ``price_mismatch``): ``snapshot.price_cents`` must equal
  ``catalog.price(item, quantity)``. Checked on every event carrying the snapshot, so a
  mismatch first seen at Finalize (e.g. the tracker was down at creation) still fires.
  Unknown items are left to the Validation step.
* ``duplicate_order`` (reason ``duplicate_order``): the first saga seen for an order_id
  owns it; any other saga of the same order_id (submitted by the same user: another user's
  is on another partition) breaks the rule.
* ``velocity`` (reason ``velocity_exceeded``, off unless a limit > 0): the order is one of
  more than ``limit`` orders created by one user within ``window_s`` (60) seconds of event
  time (``occurred_at``); checked when the tracker first sees the saga's ``OrderCreated``.
  Of ``limit + k`` orders created within 60 s, the ``k`` seen last are rejected, whatever
  the order in which their events arrive.
  Users are partition-local, so the count is exact in whichever process owns the user's
  partition; :class:`VelocityWindow` is shared by the rule sets of the partitions one
  process owns.

Idempotence: each (saga, rule) fires at most once — redeliveries and replays of the same
events return nothing new — and nothing fires for a saga that has ended rejected or failed
(``OrderRejected``/``OrderFailed``, or an ``OrderCompensated`` announcing that outcome).

State: :class:`TrackerRules` is a :class:`~kafka_saga.core.store.Store`. Each change goes to
its journal, and a new owner restores the rules from the compacted changelog
(:meth:`TrackerRules.load`), not by observing the partition's history. Entries (UTF-8):

* ``a:<saga_id>`` -> ``b"1<order_id>"`` (the saga owns its order) or ``b"0<order_id>"``:
  written once, when the saga is first seen, so the changelog keeps the arrival order;
* ``s:<saga_id>`` -> the saga's state bits as a decimal, when a rule fires or it ends;
* ``v:<saga_id>`` -> ``b"<occurred_at seconds> <user>"``, written once, when its creation
  is counted by the velocity rule (restored into the shared :class:`VelocityWindow`).

Memory: at most ``max_sagas`` sagas per partition are remembered (first seen, first
forgotten; the default is the state window, ``Settings.state_window``), with their order's
owner, ~210 bytes each (ids kept as numbers, a saga's state as one small int); a forgotten
saga is tombstoned, could fire again, and a duplicate of a forgotten owner becomes the
owner. :class:`VelocityWindow` keeps two windows of event time per user (so late events count
right), at most ``max_users`` users (least recently active forgotten first) and
``max_per_user`` orders per user; a restore brings back the creations of the sagas still
remembered (a forgotten saga's creation no longer counts after a restore).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from .catalog import Catalog
from .compact import id_key, key_id
from .contracts import FAILED, REJECTED, Command, Event, EventType
from .store import DEFAULT_WINDOW, Journal
from .submission import reject_command as _reject_command

PRICE, DUPLICATE, VELOCITY = "price_integrity", "duplicate_order", "velocity"
REASONS = {PRICE: "price_mismatch", DUPLICATE: "duplicate_order", VELOCITY: "velocity_exceeded"}
VELOCITY_WINDOW_S = 60.0
MAX_COMMAND_ID = 128  # Command.command_id max_len
ENDED = (REJECTED, FAILED)
# A saga's state is one small int: a bit per rule fired, then "ended" and "counted".
RULE_BITS = {PRICE: 1, DUPLICATE: 2, VELOCITY: 4}
_ENDED, _COUNTED = 8, 16


@dataclass(frozen=True, slots=True)
class Violation:
    """A rule broken by a saga, noticed on ``event``."""

    saga_id: str
    rule: str
    reason: str
    event: Event
    detail: str = ""

    @property
    def order_id(self) -> str:
        return self.event.snapshot.order_id

    @property
    def command_id(self) -> str:
        return reject_command_id(self.rule, self.saga_id)


def reject_command_id(rule: str, saga_id: str) -> str:
    """``tracker:{rule}:{saga_id}``: deterministic, so a re-publication is recognisable.

    A saga id too long for a command id (over 128 characters in all) is replaced by its
    SHA-256 digest, which is just as deterministic.
    """
    command_id = f"tracker:{rule}:{saga_id}"
    if len(command_id) <= MAX_COMMAND_ID:
        return command_id
    return f"tracker:{rule}:sha256:{hashlib.sha256(saga_id.encode()).hexdigest()}"


def reject_command(violation: Violation) -> Command:
    """The ``OrderReject`` command asking the orchestrator to reject the offending saga."""
    event = violation.event
    return _reject_command(violation.order_id, violation.saga_id, event.snapshot, violation.reason,
                           "tracker", event.step, command_id=violation.command_id,
                           rule=violation.rule)


def event_seconds(occurred_at: str) -> float | None:
    """``occurred_at`` (RFC 3339, validated by the contract) as POSIX seconds, or None."""
    try:
        return datetime.fromisoformat(occurred_at).timestamp()
    except (TypeError, ValueError):
        return None


@dataclass(slots=True)
class VelocityWindow:
    """Orders created per user by event time; may be shared by several partitions' rules."""

    limit: int
    window_s: float = VELOCITY_WINDOW_S
    max_users: int = 100_000
    max_per_user: int = 1_000
    # user -> saga_id -> (occurred_at seconds, partition)
    users: OrderedDict[str, dict[str, tuple[float, int]]] = field(default_factory=OrderedDict)

    def add(self, user: str, saga_id: str, at: float, partition: int = 0) -> int:
        """Record one creation (idempotent per saga); return the size of the busiest burst it
        belongs to: the most creations seen so far within one window (``last - first <
        window_s``) that contains ``at``. Independent of arrival order once all are seen."""
        entries = self.users.get(user)
        if entries is None:
            entries = self.users[user] = {}
            if len(self.users) > self.max_users:
                self.users.popitem(last=False)
        else:
            self.users.move_to_end(user)
        entries.setdefault(saga_id, (at, partition))
        # keep two windows behind the newest, so an event up to one window late counts right
        horizon = max(t for t, _ in entries.values()) - 2 * self.window_s
        for key in [k for k, (t, _) in entries.items() if t <= horizon]:
            del entries[key]
        while len(entries) > self.max_per_user:
            del entries[next(iter(entries))]
        times = sorted(t for t, _ in entries.values() if abs(t - at) < self.window_s)
        return max((bisect_left(times, start + self.window_s) - i
                    for i, start in enumerate(times) if start <= at), default=0)

    def forget(self, partition: int) -> None:
        """Drop what one partition contributed (revoked, or about to be rebuilt)."""
        for user in list(self.users):
            entries = self.users[user]
            for key in [k for k, (_, p) in entries.items() if p == partition]:
                del entries[key]
            if not entries:
                del self.users[user]


class TrackerRules:
    """The rules' state for one partition of ``orders.events``."""

    def __init__(self, catalog: Catalog, velocity_limit: int = 0, *, partition: int = 0,
                 window: VelocityWindow | None = None,
                 max_sagas: int = DEFAULT_WINDOW) -> None:
        if window is None and velocity_limit > 0:
            window = VelocityWindow(velocity_limit)
        self.catalog = catalog
        self.partition = partition
        self.window = window if window is not None and window.limit > 0 else None
        self.max_sagas = max(1, max_sagas)
        # ids as keys (see compact.id_key): saga -> state bits, order -> its owner saga
        self._sagas: dict[int | str, int] = {}
        self._owners: dict[int | str, int | str] = {}
        self._arrived: deque[int | str] = deque()  # sagas, oldest first
        self._arrived_orders: deque[int | str] = deque()  # their orders
        self.journal = Journal()
        self.fired_total = 0  # by this instance (not restored)

    def __len__(self) -> int:
        return len(self._sagas)

    def owner(self, order_id: str) -> str | None:
        owner = self._owners.get(id_key(order_id))
        return None if owner is None else key_id(owner)

    def fired(self, saga_id: str) -> frozenset[str]:
        state = self._sagas.get(id_key(saga_id), 0)
        return frozenset(rule for rule, bit in RULE_BITS.items() if state & bit)

    def ended(self, saga_id: str) -> bool:
        return bool(self._sagas.get(id_key(saga_id), 0) & _ENDED)

    def observe(self, event: Event) -> list[Violation]:
        """Apply one event; return the violations it reveals that have not fired before."""
        saga = id_key(event.saga_id)
        state = self._state(saga, event)
        kind = event.type
        if kind in (EventType.ORDER_REJECTED, EventType.ORDER_FAILED) or (
                kind is EventType.ORDER_COMPENSATED and event.metadata.get("outcome") in ENDED):
            if not state & _ENDED:
                self._set(saga, event.saga_id, state | _ENDED)
            return []
        count = 0
        if kind is EventType.ORDER_CREATED and self.window is not None and not state & _COUNTED:
            at = event_seconds(event.occurred_at)
            if at is not None:
                state = self._sagas[saga] = state | _COUNTED
                user = event.snapshot.user
                self.journal.put("v:" + event.saga_id, f"{at!r} {user}".encode())
                count = self.window.add(user, event.saga_id, at, self.partition)
        if state & _ENDED:
            return []
        found = [*self._check(event, saga), *self._velocity(event, count)]
        violations = []
        for rule, detail in found:
            bit = RULE_BITS[rule]
            if state & bit:
                continue
            state |= bit
            self.fired_total += 1
            violations.append(Violation(event.saga_id, rule, REASONS[rule], event, detail))
        if violations:
            self._set(saga, event.saga_id, state)
        return violations

    def load(self, key: str, value: bytes) -> None:
        """Take back one changelog entry (see the module); writes nothing to the journal."""
        kind, _, saga_id = key.partition(":")
        saga = id_key(saga_id)
        if kind == "a":
            if value[:1] not in (b"0", b"1"):
                raise ValueError(f"not a tracker rules arrival: {value!r}")
            if saga not in self._sagas:
                order = id_key(value[1:].decode())
                self._sagas[saga] = 0
                if value[:1] == b"1":
                    self._owners[order] = saga
                self._remember(saga, order, write=False)
            return
        if kind not in ("s", "v"):
            raise ValueError(f"not a tracker rules entry: {key!r}")
        state = self._sagas.get(saga)
        if state is None:  # forgotten as it was loaded (a smaller window than when written)
            return
        if kind == "s":
            self._sagas[saga] = state | int(value)
            return
        self._sagas[saga] = state | _COUNTED
        at, _, user = value.partition(b" ")
        if self.window is not None:
            self.window.add(user.decode(), saga_id, float(at), self.partition)

    def entries(self) -> Iterator[tuple[str, bytes]]:
        """Every live entry as the journal writes it (a snapshot), sagas in arrival order."""
        counted: dict[str, tuple[float, str]] = {}
        if self.window is not None:
            for user, sagas in self.window.users.items():
                for saga_id, (at, partition) in sagas.items():
                    if partition == self.partition:
                        counted[saga_id] = (at, user)
        for saga, order in zip(list(self._arrived), list(self._arrived_orders), strict=True):
            state = self._sagas.get(saga)
            if state is None:
                continue
            saga_id = key_id(saga)
            owns = self._owners.get(order) == saga
            yield "a:" + saga_id, b"%d%s" % (owns, key_id(order).encode())
            if state & ~_COUNTED:
                yield "s:" + saga_id, b"%d" % state
            if saga_id in counted:
                at, user = counted[saga_id]
                yield "v:" + saga_id, f"{at!r} {user}".encode()

    def _set(self, saga: int | str, saga_id: str, state: int) -> None:
        self._sagas[saga] = state
        self.journal.put("s:" + saga_id, b"%d" % state)

    def _check(self, event: Event, saga: int | str) -> list[tuple[str, str]]:
        snap = event.snapshot
        found = []
        owner = self._owners.get(id_key(snap.order_id))
        if owner is not None and owner != saga:
            found.append((DUPLICATE, f"order {snap.order_id} belongs to saga {key_id(owner)}"))
        expected = self.catalog.price(snap.item, snap.quantity)
        if expected is not None and snap.price_cents != expected:
            found.append((PRICE, f"price_cents {snap.price_cents} != catalog {expected} "
                                 f"({snap.quantity} x {snap.item})"))
        return found

    def _velocity(self, event: Event, count: int) -> list[tuple[str, str]]:
        if self.window is None or count <= self.window.limit:
            return []
        return [(VELOCITY, f"{count} orders by {event.snapshot.user} within "
                           f"{self.window.window_s:g}s (limit {self.window.limit})")]

    def _state(self, saga: int | str, event: Event) -> int:
        """The saga's state bits; a new saga is remembered (and the oldest forgotten)."""
        state = self._sagas.get(saga)
        if state is not None:
            return state
        order_id = event.snapshot.order_id
        order = id_key(order_id)
        self._sagas[saga] = 0
        owns = self._owners.setdefault(order, saga) == saga
        self.journal.put("a:" + event.saga_id, b"%d%s" % (owns, order_id.encode()))
        self._remember(saga, order, write=True)
        return 0

    def _remember(self, saga: int | str, order: int | str, *, write: bool) -> None:
        """Queue a new saga; forget the oldest beyond ``max_sagas`` (tombstoned if ``write``)."""
        self._arrived.append(saga)
        self._arrived_orders.append(order)
        while len(self._sagas) > self.max_sagas:
            old_saga, old_order = self._arrived.popleft(), self._arrived_orders.popleft()
            state = self._sagas.pop(old_saga)
            if self._owners.get(old_order) == old_saga:
                del self._owners[old_order]
            if write:
                saga_id = key_id(old_saga)
                self.journal.delete("a:" + saga_id)
                if state & ~_COUNTED:
                    self.journal.delete("s:" + saga_id)
                if state & _COUNTED:
                    self.journal.delete("v:" + saga_id)
