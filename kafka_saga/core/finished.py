"""Finished sagas the orchestrator remembers for duplicates and late rejects. Pure, no I/O.

A finished saga is needed for two things only: recognising a duplicate ``OrderCreate`` (by
saga id or command id) and answering an ``OrderReject`` that comes after the end. A rejected
or failed saga ignores a reject, so it keeps its status, command id and partition; an
approved one is compensated by a late reject, so it keeps everything :class:`Saga` holds.
Each is one ``bytes`` record (JSON), a few hundred bytes instead of the ~1 KB of live
objects; :meth:`FinishedSagas.saga` rebuilds the approved ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import fields
from typing import Any, NamedTuple

import orjson

from .contracts import Snapshot, Step
from .saga import APPROVED, Ending, Saga

SNAPSHOT_FIELDS = tuple(f.name for f in fields(Snapshot))  # a snapshot is packed as a list


class Finished(NamedTuple):
    status: str
    partition: int  # of orders.commands (and orders.events)
    saga: Saga | None  # rebuilt when approved (a new object each time), else None


def settled(saga: Saga) -> bool:
    """Finished for good: terminal, and not an approved saga being compensated by a late reject."""
    return saga.terminal and not (saga.status == APPROVED and saga.ending is not None)


def pack(saga: Saga, partition: int, full: bool = False) -> bytes:
    """One saga as a record: the whole saga when it is approved (or ``full``), else only what
    a rejected or failed saga still needs."""
    if saga.status != APPROVED and not full:
        fields_: list[Any] = [partition, saga.command_id, saga.status]
    else:
        ending = saga.ending
        fields_ = [partition, saga.command_id, saga.status,
                   [getattr(saga.snapshot, name) for name in SNAPSHOT_FIELDS], saga.completed,
                   saga.compensated, saga.retry_count, saga.reason, saga.step,
                   [ending.outcome, ending.step, ending.reason] if ending else None, saga.origin,
                   saga.trace]
    return bytes(memoryview(orjson.dumps(fields_)))  # a copy: orjson's bytes keep 4 KiB spare


def unpack(saga_id: str, record: bytes) -> Saga | None:
    """The saga back from an approved saga's record; None for a rejected or failed one."""
    fields: list[Any] = orjson.loads(record)
    if len(fields) == 3:
        return None
    (_, command_id, status, snapshot, completed, compensated, retry_count, reason, step,
     ending, origin, *rest) = fields  # rest: the trace (records written before it had none)
    return Saga(saga_id, Snapshot(*snapshot), command_id, status,
                [Step(s) for s in completed], [Step(s) for s in compensated], retry_count,
                reason, Step(step), Ending(ending[0], Step(ending[1]), ending[2]) if ending else None,
                tuple(origin) if origin else None, rest[0] if rest else "")


class FinishedSagas:
    """``saga_id -> finished saga`` records, at most ``limit``, the oldest finished forgotten first."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self._records: OrderedDict[str, bytes] = OrderedDict()
        self._by_command: dict[str, str] = {}  # command_id -> saga_id

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, saga_id: str) -> bool:
        return saga_id in self._records

    def knows_command(self, command_id: str) -> bool:
        return command_id in self._by_command

    def add(self, saga: Saga, partition: int) -> list[str]:
        """Remember (again: it moves to the end) a finished saga; return the saga ids forgotten."""
        self._records[saga.saga_id] = pack(saga, partition)
        self._records.move_to_end(saga.saga_id)
        if saga.command_id:
            self._by_command[saga.command_id] = saga.saga_id
        return self._trim()

    def _trim(self) -> list[str]:
        forgotten = []
        while len(self._records) > self.limit:
            oldest = next(iter(self._records))
            self.remove(oldest)
            forgotten.append(oldest)
        return forgotten

    def record(self, saga_id: str) -> bytes | None:
        return self._records.get(saga_id)

    def records(self) -> Iterator[tuple[str, bytes]]:
        """``("s:<saga_id>", record)`` of every finished saga, oldest first."""
        for saga_id, record in list(self._records.items()):
            yield "s:" + saga_id, record

    def put_record(self, saga_id: str, record: bytes) -> list[str]:
        """Take back a record written by :meth:`record` (a restore); the saga ids forgotten."""
        self._records.pop(saga_id, None)
        self._records[saga_id] = record
        command_id = orjson.loads(record)[1]
        if command_id:
            self._by_command[command_id] = saga_id
        return self._trim()

    def get(self, saga_id: str) -> Finished | None:
        record = self._records.get(saga_id)
        if record is None:
            return None
        partition, _, status = orjson.loads(record)[:3]
        return Finished(status, partition, unpack(saga_id, record))

    def remove(self, saga_id: str) -> None:
        record = self._records.pop(saga_id, None)
        if record is not None:
            command_id = orjson.loads(record)[1]
            if self._by_command.get(command_id) == saga_id:
                del self._by_command[command_id]


__all__ = ["Finished", "FinishedSagas", "pack", "settled", "unpack"]
