"""Pure units: the simulated payment gateway, the catalog and order submission."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from kafka_saga.core.catalog import DEFAULT_ITEMS, Catalog, CatalogItem
from kafka_saga.core.contracts import MAX_MONEY, Command, CommandType, Snapshot, Step
from kafka_saga.core.fields import ContractError
from kafka_saga.core.payment import APPROVED, DECLINED, SimulatedGateway, TransientPaymentError
from kafka_saga.core.submission import (
    new_order_command,
    parse_cancel_request,
    parse_order_request,
    reject_command,
)


def snap(order_id: str = "o-1", **attributes: str) -> Snapshot:
    return Snapshot(order_id=order_id, user="alice", item="latte", quantity=2, price_cents=800,
                    attributes=attributes)


# --- payment gateway -----------------------------------------------------------------

async def test_charge_approves() -> None:
    gateway = SimulatedGateway()
    assert await gateway.charge("k", snap()) == APPROVED
    assert gateway.charged == {"k"} and gateway.attempts == {"k": 1}


async def test_decline() -> None:
    gateway = SimulatedGateway()
    assert await gateway.charge("k", snap(payment="decline")) == DECLINED
    assert gateway.charged == set() and gateway.attempts == {"k": 1}
    # a decline is a business answer: it wins over the simulated transient errors
    assert await gateway.charge("j", snap(payment="decline", payment_errors="3")) == DECLINED


async def test_payment_errors_fail_the_first_attempts_transiently() -> None:
    gateway, order = SimulatedGateway(), snap(payment_errors="2")
    for attempt in (1, 2):
        with pytest.raises(TransientPaymentError, match=f"attempt {attempt}"):
            await gateway.charge("k", order)
        assert "k" not in gateway.charged
    assert await gateway.charge("k", order) == APPROVED
    assert gateway.attempts["k"] == 3 and gateway.charged == {"k"}


async def test_attempts_are_counted_per_key() -> None:
    gateway, order = SimulatedGateway(), snap(payment_errors="1")
    with pytest.raises(TransientPaymentError):
        await gateway.charge("a", order)
    assert await gateway.charge("a", order) == APPROVED
    with pytest.raises(TransientPaymentError):  # "b" has its own first attempt
        await gateway.charge("b", order)
    assert gateway.attempts == {"a": 2, "b": 1}


async def test_forget_resets_a_key() -> None:
    gateway, order = SimulatedGateway(), snap(payment_errors="1")
    with pytest.raises(TransientPaymentError):
        await gateway.charge("k", order)
    assert await gateway.charge("k", order) == APPROVED
    await gateway.refund("k", order)
    gateway.forget("k")
    assert (gateway.attempts, gateway.charged, gateway.refunded) == ({}, set(), set())
    with pytest.raises(TransientPaymentError):
        await gateway.charge("k", order)
    gateway.forget("never-seen")  # harmless


@pytest.mark.parametrize("value", ["abc", "-3", "1.5", "", " "])
async def test_bad_attribute_values_count_as_zero(value: str) -> None:
    gateway = SimulatedGateway()
    order = snap(payment_errors=value, payment_delay_ms=value)
    assert await gateway.charge("k", order) == APPROVED  # no transient error first
    assert gateway.attempts == {"k": 1} and gateway.charged == {"k"}


async def test_payment_delay() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await SimulatedGateway().charge("k", snap(payment_delay_ms="40")) == APPROVED
    # asyncio may wake a timer up to its clock resolution early: allow exactly that much
    assert loop.time() - started >= 0.040 - time.get_clock_info("monotonic").resolution


async def test_failure_rate_one_always_fails_transiently() -> None:
    gateway = SimulatedGateway(failure_rate=1.0, seed=1)
    for n in range(20):
        with pytest.raises(TransientPaymentError, match="random gateway failure"):
            await gateway.charge(f"k{n % 3}", snap())
    assert gateway.charged == set()


async def test_failure_rate_zero_never_fails() -> None:
    gateway = SimulatedGateway(failure_rate=0.0, seed=1)
    assert [await gateway.charge(f"k{n}", snap()) for n in range(50)] == [APPROVED] * 50


async def test_failure_rate_is_reproducible_with_a_seed() -> None:
    async def run(gateway: SimulatedGateway) -> list[bool]:
        out = []
        for n in range(40):
            try:
                out.append(await gateway.charge(f"k{n}", snap()) == APPROVED)
            except TransientPaymentError:
                out.append(False)
        return out

    first = await run(SimulatedGateway(0.5, seed=7))
    assert first == await run(SimulatedGateway(0.5, seed=7))
    assert True in first and False in first


async def test_refund_is_idempotent() -> None:
    gateway = SimulatedGateway()
    await gateway.charge("k", snap())
    for _ in range(3):
        assert await gateway.refund("k", snap()) is None
    assert gateway.refunded == {"k"} and gateway.charged == {"k"}


# --- catalog -----------------------------------------------------------------------------

def test_default_catalog() -> None:
    catalog = Catalog()
    assert catalog.items == DEFAULT_ITEMS and catalog.items is not DEFAULT_ITEMS
    assert "espresso" in catalog and "unicorn" not in catalog
    assert catalog.unit_price("espresso") == 250 and catalog.price("latte", 3) == 1200
    assert catalog.initial_stock("limited-edition") == 5


def test_unknown_item_has_no_price_and_no_stock() -> None:
    catalog = Catalog()
    assert catalog.unit_price("unicorn") is None and catalog.price("unicorn", 2) is None
    assert catalog.initial_stock("unicorn") == 0


def test_free_item_prices_to_zero_not_none() -> None:
    catalog = Catalog({"sample": CatalogItem(0, 1)})
    assert catalog.unit_price("sample") == 0 and catalog.price("sample", 5) == 0


@pytest.mark.parametrize("path", [None, ""])
def test_load_without_a_path_gives_the_defaults(path: str | None) -> None:
    assert Catalog.load(path).to_dict() == Catalog().to_dict()


@pytest.mark.parametrize("text", [
    "items:\n  tea: {price_cents: 120, stock: 7}\n  cake: {price_cents: 300}\n",
    "tea:\n  price_cents: 120\n  stock: 7\ncake:\n  price_cents: 300\n",
])
def test_load_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    for given in (path, str(path)):
        catalog = Catalog.load(given)
        assert catalog.to_dict() == {"tea": {"price_cents": 120, "stock": 7},
                                     "cake": {"price_cents": 300, "stock": 0}}
        assert "espresso" not in catalog  # a file replaces the defaults


def test_non_string_item_names_become_strings() -> None:
    assert list(Catalog.from_mapping({42: {"price_cents": 1}}).items) == ["42"]


@pytest.mark.parametrize("data, fragment", [
    (None, "non-empty mapping"), ([], "non-empty mapping"), ("tea", "non-empty mapping"),
    ({}, "non-empty mapping"),
    ({"tea": {"price_cents": -1}}, "catalog.tea: price_cents and stock"),
    ({"tea": {"price_cents": 1, "stock": -1}}, "catalog.tea"),
    ({"tea": {"price_cents": True}}, "catalog.tea"),
    ({"tea": {"price_cents": "120"}}, "catalog.tea"),
    ({"tea": {"price_cents": 1.5}}, "catalog.tea"),
    ({"tea": {"stock": 3}}, "catalog.tea"),  # price missing
    ({"tea": {"price_cents": 1, "stock": False}}, "catalog.tea"),
    ({"tea": 120}, "catalog.tea: expected a mapping"),
    ({"tea": ["price_cents", 1]}, "catalog.tea: expected a mapping"),
])
def test_invalid_catalogs(data: Any, fragment: str) -> None:
    with pytest.raises(ContractError, match=fragment) as info:
        Catalog.from_mapping(data)
    assert info.value.reason == "invalid_catalog"


@pytest.mark.parametrize("text", ["", "- tea\n- cake\n", "items:\n", "items: []\n", "42\n",
                                  "tea: [unclosed\n", "tea: {price_cents: yes}\n",
                                  "items:\n  tea: {price_cents: -5}\n", "tea: coffee\n"])
def test_invalid_catalog_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ContractError) as info:
        Catalog.load(path)
    assert info.value.reason == "invalid_catalog" and str(path) in str(info.value)


@pytest.mark.parametrize("name", ["missing.yaml", "."])
def test_unreadable_catalog_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(ContractError, match="cannot read catalog") as info:
        Catalog.load(path)
    assert info.value.reason == "invalid_catalog"


def test_to_dict_round_trips() -> None:
    data = Catalog().to_dict()
    assert data["espresso"] == {"price_cents": 250, "stock": 100_000}
    assert Catalog.from_mapping(data).to_dict() == data


# --- submission --------------------------------------------------------------------------

def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"user": "alice", "item": "latte", "quantity": 2}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def test_parse_minimal_order() -> None:
    assert parse_order_request(body()) == {"user": "alice", "item": "latte", "quantity": 2,
                                           "attributes": {}, "price_cents": None}


@pytest.mark.parametrize("given, expected", [
    ({"quantity": 1}, {"quantity": 1}), ({"quantity": 100}, {"quantity": 100}),
    ({"user": "u" * 128}, {"user": "u" * 128}), ({"user": " bob "}, {"user": " bob "}),
    ({"attributes": None}, {"attributes": {}}), ({"price_cents": None}, {"price_cents": None}),
    ({"price_cents": 0}, {"price_cents": 0}), ({"price_cents": MAX_MONEY}, {"price_cents": MAX_MONEY}),
    ({"attributes": {f"k{i}": "v" for i in range(64)}},
     {"attributes": {f"k{i}": "v" for i in range(64)}}),
    ({"attributes": {"k" * 256: "v" * 1024}}, {"attributes": {"k" * 256: "v" * 1024}}),
    ({"item": "not-in-catalog"}, {"item": "not-in-catalog"}),  # the saga's Validation checks it
])
def test_parse_accepts(given: dict[str, Any], expected: dict[str, Any]) -> None:
    parsed = parse_order_request(body(**given))
    assert parsed == {**parse_order_request(body()), **expected}


def test_parse_copies_attributes() -> None:
    attributes = {"payment": "decline"}
    parsed = parse_order_request(body(attributes=attributes, price_cents=10))
    assert parsed["attributes"] == attributes and parsed["attributes"] is not attributes
    assert parsed["price_cents"] == 10


@pytest.mark.parametrize("payload, reason, fragment", [
    (None, "wrong_shape", "got null"), ([], "wrong_shape", "got list"),
    ("order", "wrong_shape", "got str"),
    (body(extra=1, zzz=2), "unknown_field", "'extra', 'zzz'"),
    (body(user=...), "missing_field", "order.user: required"),
    (body(item=...), "missing_field", "order.item: required"),
    (body(quantity=...), "missing_field", "order.quantity: required"),
    (body(user=None), "invalid_field", "order.user: expected a string, got null"),
    (body(item=7), "invalid_field", "order.item: expected a string, got int"),
    (body(user="  "), "invalid_field", "order.user: must not be empty"),
    (body(item=""), "invalid_field", "order.item: must not be empty"),
    (body(user="u" * 129), "invalid_field", "longer than 128"),
    (body(quantity=True), "invalid_field", "got bool"),
    (body(quantity=2.5), "invalid_field", "got float"),
    (body(quantity=1e300), "invalid_field", "between 1 and 100"),
    (body(quantity="2"), "invalid_field", "got str"),
    (body(quantity=0), "invalid_field", "between 1 and 100, got 0"),
    (body(quantity=101), "invalid_field", "got 101"),
    (body(quantity=-1), "invalid_field", "got -1"),
    (body(attributes=["a"]), "invalid_field", "order.attributes: expected an object"),
    (body(attributes={f"k{i}": "v" for i in range(65)}), "invalid_field", "more than 64"),
    (body(attributes={"k" * 257: "v"}), "invalid_field", "key longer than 256"),
    (body(attributes={"n": 1}), "invalid_field", "order.attributes.n: expected a string"),
    (body(attributes={"n": None}), "invalid_field", "got NoneType"),
    (body(attributes={"n": "v" * 1025}), "invalid_field", "longer than 1024"),
    (body(price_cents=True), "invalid_field", "price_cents: expected an integer, got bool"),
    (body(price_cents=1.5), "invalid_field", "got float"),
    (body(price_cents="100"), "invalid_field", "got str"),
    (body(price_cents=-1), "invalid_field", "got -1"),
    (body(price_cents=MAX_MONEY + 1), "invalid_field", "must be between 0"),
])
def test_parse_rejects(payload: Any, reason: str, fragment: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_order_request(payload)
    assert info.value.reason == reason
    assert fragment in str(info.value)


def test_parse_takes_integers_as_json_schema_does() -> None:
    """14.0 is an integer to JSON Schema (and so to the OpenAPI document); null is "not given"."""
    parsed = parse_order_request(body(quantity=2.0, price_cents=900.0))
    assert (parsed["quantity"], parsed["price_cents"]) == (2, 900)
    assert type(parsed["quantity"]) is int and type(parsed["price_cents"]) is int
    parsed = parse_order_request(body(price_cents=None, attributes=None))
    assert parsed["price_cents"] is None and parsed["attributes"] == {}


def test_parse_cancel_request() -> None:
    assert parse_cancel_request({"reason": "changed my mind"}) == "changed my mind"
    for payload, reason in [({}, "missing_field"), ({"reason": " "}, "invalid_field"),
                            ({"reason": "r" * 1025}, "invalid_field"), (None, "wrong_shape"),
                            ({"reason": "x", "user": "a"}, "unknown_field")]:
        with pytest.raises(ContractError) as info:
            parse_cancel_request(payload)
        assert info.value.reason == reason and "cancel" in str(info.value)


def test_new_order_command_prices_from_the_catalog() -> None:
    command = new_order_command("alice", "latte", 3, Catalog(), attributes={"a": "b"})
    assert (command.type, command.step) == (CommandType.ORDER_CREATE, Step.VALIDATION)
    snapshot = command.snapshot
    assert (snapshot.user, snapshot.item, snapshot.quantity) == ("alice", "latte", 3)
    assert snapshot.price_cents == 1200 and snapshot.attributes == {"a": "b"}
    assert command.command_id and command.saga_id and snapshot.order_id
    assert len({command.command_id, command.saga_id, snapshot.order_id}) == 3
    assert Command.decode(command.encode()) == command


@pytest.mark.parametrize("item, given, expected", [
    ("unicorn", None, 0), ("latte", 0, 0), ("latte", 999, 999), ("unicorn", 5, 5),
])
def test_new_order_command_price(item: str, given: int | None, expected: int) -> None:
    command = new_order_command("alice", item, 2, Catalog(), price_cents=given)
    assert command.snapshot.price_cents == expected


def test_new_order_command_ids() -> None:
    attributes = {"k": "v"}
    command = new_order_command("u", "latte", 1, Catalog(), attributes, order_id="o-9",
                                saga_id="s-9")
    assert (command.snapshot.order_id, command.saga_id) == ("o-9", "s-9")
    assert command.snapshot.attributes is not attributes
    other = new_order_command("u", "latte", 1, Catalog())
    assert other.command_id != command.command_id and other.saga_id != command.saga_id
    assert other.snapshot.attributes == {}


def test_reject_command() -> None:
    snapshot = snap("o-1")
    command = reject_command("o-1", "s-1", snapshot, "price mismatch", "tracker")
    assert (command.type, command.saga_id, command.step) == (CommandType.ORDER_REJECT, "s-1",
                                                             Step.VALIDATION)
    assert command.metadata == {"reason": "price mismatch", "source": "tracker"}
    assert command.snapshot == snapshot and command.key == b"o-1"
    assert reject_command("o-1", "s-1", snapshot, "r", "cli", Step.FINALIZE).step is Step.FINALIZE
    assert Command.decode(command.encode()) == command


def test_reject_command_for_another_order_is_refused() -> None:
    with pytest.raises(ContractError, match="snapshot is of order 'o-1', not 'o-2'") as info:
        reject_command("o-2", "s-1", snap("o-1"), "r", "cli")
    assert info.value.reason == "invalid_field"
