"""What a role hands the consume loop, and how one record is handled — broker or not.

A role describes a :class:`Subscription`: topics, group, decoder and a handler. The handler
gets a decoded message and its record (and, for a stateful subscription, the partition's
state) and *returns* the records it wants published, as :class:`Emit` values; it never calls
the producer. The loop publishes them and flushes them at the checkpoint, before it commits
the offsets (:mod:`kafka_saga.bus.loop`); the in-memory bus appends them to its topics
(:mod:`kafka_saga.bus.memory`). Both run :func:`handle_record`, so a role behaves the same
on either.

Per-partition state is one mechanism: a subscription with ``state`` (a
:class:`PartitionStates` of :class:`~kafka_saga.core.store.Store` objects) and a ``changelog``
topic keeps one store per partition of its first topic (a co-partitioned second topic shares
it by partition number). The loop writes each store's journal to the changelog at every
checkpoint and rebuilds a newly assigned partition's store from the changelog, then resumes
from the committed offset (:mod:`kafka_saga.bus.stores`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any, Generic, NamedTuple, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from ..core.contracts import ContractError
from ..observation import tracing
from .fence import Fence, Fenced
from .inflight import InFlight
from .producer import DeliveryError

S = TypeVar("S")
Headers = list[tuple[str, bytes]]


class Emit(NamedTuple):
    """A record a handler wants published: to ``partition`` when given, else by key.
    ``source``: for what ``on_batch_end`` returns, the partition (of the subscription's first
    topic) whose records caused it, whose transaction carries it under exactly-once."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    headers: Headers | None = None
    source: int | None = None


Emits = Iterable[Emit] | None
# handle(message, record) or, with per-partition state, handle(message, record, state);
# plain or async; returns what to publish.
Handler = Callable[..., Emits | Awaitable[Emits]]


class PartitionStates(Generic[S]):
    """A role's state store per assigned partition number, opened and closed by the loop.

    ``create(tp)`` makes the empty store of a newly assigned partition (the loop then loads
    its changelog into it); ``close(tp, state)``, when given, runs when it is given away.
    Two optional checkpoint hooks: ``taken(partition, state)`` runs right after the loop
    took the store's journal, ``seal(partition, state)`` once the outputs are flushed and
    returns entries to add to the changelog write (e.g. where the store's outputs resumed).
    """

    def __init__(self, create: Callable[[TopicPartition], S],
                 close: Callable[[TopicPartition, S], None] | None = None, *,
                 taken: Callable[[int, S], None] | None = None,
                 seal: Callable[[int, S], dict[str, bytes]] | None = None) -> None:
        self._create = create
        self._close = close
        self.taken = taken
        self.seal = seal
        self.by_partition: dict[int, S] = {}

    def open(self, tp: TopicPartition) -> S:
        self.close(tp)
        state = self.by_partition[tp.partition] = self._create(tp)
        return state

    def close(self, tp: TopicPartition) -> None:
        state = self.by_partition.pop(tp.partition, None)
        if state is not None and self._close is not None:
            self._close(tp, state)

    def get(self, tp: TopicPartition) -> S | None:
        return self.by_partition.get(tp.partition)

    def items(self) -> list[tuple[int, S]]:
        return list(self.by_partition.items())

    def values(self) -> Iterator[S]:
        return iter(list(self.by_partition.values()))

    def partitions(self) -> list[int]:
        return sorted(self.by_partition)

    def __len__(self) -> int:
        return len(self.by_partition)


@dataclass
class Subscription:
    """What a role consumes and how it handles each record."""

    role: str
    topics: tuple[str, ...]
    group_id: str
    decode: Callable[[bytes | None], Any]
    handle: Handler
    # called after each batch (e.g. to publish what the batch changed); returns what to publish
    on_batch_end: Callable[[], Emits | Awaitable[Emits]] | None = None
    # per-partition state stores and their changelog topic (see the module docstring)
    state: PartitionStates[Any] | None = None
    changelog: str | None = None
    # lifecycle hooks for a role whose state lives elsewhere (the orchestrator's sagas)
    on_assigned: Callable[[Any, dict[TopicPartition, int]], Awaitable[None]] | None = None
    on_revoked: Callable[[set[TopicPartition]], Awaitable[None]] | None = None
    consumer_options: dict[str, Any] = field(default_factory=dict)
    # Whether this subscription dead-letters what it cannot read. Exactly one group per topic
    # does (so a bad record lands in the DLQ once); the others, and the DLQ's own reader
    # (never re-publish garbage), count and skip it.
    dead_letter: bool = True
    # Work started per record and finished later (e.g. sagas): bounded, with pause/resume.
    in_flight: InFlight | None = None
    # Holds the role's side effects after a pause until the membership is confirmed.
    fence: Fence | None = None
    # Whether handling writes records (outputs, dead letters): under exactly-once such a
    # consumer, like one with a changelog, checkpoints in transactions.
    produces: bool = False
    # The name of each record's span when tracing is on (default: "<role> process <topic>")
    span_name: str | None = None

    @property
    def transactional(self) -> bool:
        return self.produces or self.dead_letter or self.changelog is not None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that cannot be handled: it goes to the DLQ (or is counted and skipped)."""

    reason: str
    error: str
    by_handler: bool = False


Outcome = Emits | Rejected  # of one record: what to publish, or why it is rejected


def handle_record(sub: Subscription, record: Any, state: Any) -> Outcome | Coroutine[Any, Any, Outcome]:
    """Decode and handle one record; what to publish, or why it is rejected. For an async
    handler the result is a coroutine to await (``if type(out) is CoroutineType``): a plain
    handler, the common case, costs no coroutine per record. Retriable errors raise.
    """
    try:
        message = sub.decode(record.value)
    except ContractError as exc:
        return Rejected(exc.reason, str(exc))
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the role
        return Rejected("decode_error", f"{type(exc).__name__}: {exc}")
    if tracing.on():  # the span of the record's handling names what it is about
        _describe(message)
    handler = sub.handle
    try:
        out = handler(message, record) if sub.state is None else handler(message, record, state)
    except Exception as exc:
        if is_retriable(exc):
            raise
        return _handler_error(exc)
    if type(out) is CoroutineType:
        return _awaited(out)
    return out  # type: ignore[return-value]


async def _awaited(pending: Coroutine[Any, Any, Emits]) -> Outcome:
    try:
        out = await pending
    except Exception as exc:
        if is_retriable(exc):
            raise
        return _handler_error(exc)
    return out


def _describe(message: Any) -> None:
    snapshot = getattr(message, "snapshot", None)
    tracing.describe(saga_id=getattr(message, "saga_id", None),
                     order_id=getattr(snapshot or message, "order_id", None),
                     user=getattr(snapshot, "user", None),
                     step=getattr(getattr(message, "step", None), "value", None),
                     message_type=getattr(getattr(message, "type", None), "value", None))


def _handler_error(exc: Exception) -> Rejected:
    return Rejected("handler_error", f"{type(exc).__name__}: {exc}", by_handler=True)


async def batch_end(sub: Subscription) -> Emits:
    if sub.on_batch_end is None:
        return None
    out = sub.on_batch_end()
    if inspect.isawaitable(out):
        out = await out
    return out


def is_retriable(exc: BaseException) -> bool:
    """Retriable errors crash the role (the supervisor restarts it, the batch is redelivered)."""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or type(exc).__name__ in ("KafkaConnectionError", "KafkaTimeoutError")
    return isinstance(exc, DeliveryError | Fenced | OSError | TimeoutError)
