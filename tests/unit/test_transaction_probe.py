"""Choosing exactly-once: a broker's "no" decides, its silence does not.

With one node of a cluster down, the coordinator of the probe's transactional id may be
unreachable for a while; the probe then tries another id (another coordinator) rather than
settling for at-least-once. The probe itself against Tansu (an error answer: no) and Apache
Kafka (yes) is exercised by the broker tests."""

from __future__ import annotations

from kafka_saga.bus.client import PROBE_TRIES, Bus
from kafka_saga.config import Settings


def _bus_answering(*answers: tuple[bool | None, str]) -> tuple[Bus, list[int]]:
    bus = Bus(Settings())
    calls: list[int] = []
    pending = list(answers)

    async def probe() -> tuple[bool | None, str]:
        calls.append(1)
        return pending.pop(0)

    bus._probe_transaction = probe  # type: ignore[method-assign]  # noqa: SLF001
    return bus, calls


async def test_silence_is_asked_again_and_a_later_yes_decides():
    bus, calls = _bus_answering((None, "timeout"), (None, "timeout"), (True, "begun and aborted"))
    assert await bus.grants_transactions() == (True, "begun and aborted")
    assert len(calls) == 3


async def test_an_error_answer_decides_at_once():
    bus, calls = _bus_answering((False, "no transaction: [Error -1] UnknownError"))
    assert await bus.grants_transactions() == (False, "no transaction: [Error -1] UnknownError")
    assert len(calls) == 1


async def test_silence_every_time_gives_up_with_the_reason():
    bus, calls = _bus_answering(*[(None, "no transaction: timeout")] * PROBE_TRIES)
    granted, why = await bus.grants_transactions()
    assert not granted and why == f"no answer after {PROBE_TRIES} tries: no transaction: timeout"
    assert len(calls) == PROBE_TRIES
