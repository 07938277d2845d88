"""The query's aggregate view keeps each aggregate's JSON encoded once per update."""

from __future__ import annotations

import orjson

from kafka_saga.core.contracts import UserAggregate
from kafka_saga.query.readmodel import AggregateView


def test_bodies_follow_puts_and_deletes() -> None:
    view = AggregateView()
    view.put(UserAggregate("bob", orders=1, pending=1))
    view.put(UserAggregate("amy", orders=2, approved=2))
    view.put(UserAggregate("bob", orders=1, approved=1, status="approved"))
    assert orjson.loads(view.bodies["bob"]) == orjson.loads(view.by_user["bob"].encode())
    assert orjson.loads(view.bodies["bob"])["status"] == "approved"
    assert view.page(10, None)[0] == [view.by_user["amy"], view.by_user["bob"]]
    view.delete("bob")
    assert "bob" not in view.bodies and len(view) == 1
