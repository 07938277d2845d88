"""The catalog: item -> unit price (cents) and initial stock. Shipped default, YAML override."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .fields import ContractError


@dataclass(frozen=True, slots=True)
class CatalogItem:
    price_cents: int
    stock: int


DEFAULT_ITEMS: dict[str, CatalogItem] = {
    "espresso": CatalogItem(250, 100_000),
    "cappuccino": CatalogItem(350, 100_000),
    "latte": CatalogItem(400, 100_000),
    "americano": CatalogItem(300, 100_000),
    "mocha": CatalogItem(450, 50_000),
    "macchiato": CatalogItem(325, 50_000),
    "flat-white": CatalogItem(380, 50_000),
    "cold-brew": CatalogItem(420, 20_000),
    "croissant": CatalogItem(275, 10_000),
    "limited-edition": CatalogItem(1500, 5),
}


class Catalog:
    """Prices and initial stock; pure data, shared by the orchestrator, tracker and query."""

    def __init__(self, items: Mapping[str, CatalogItem] | None = None) -> None:
        self.items: dict[str, CatalogItem] = dict(DEFAULT_ITEMS if items is None else items)

    def __contains__(self, item: str) -> bool:
        return item in self.items

    def unit_price(self, item: str) -> int | None:
        entry = self.items.get(item)
        return entry.price_cents if entry else None

    def price(self, item: str, quantity: int) -> int | None:
        unit = self.unit_price(item)
        return None if unit is None else unit * quantity

    def initial_stock(self, item: str) -> int:
        entry = self.items.get(item)
        return entry.stock if entry else 0

    @classmethod
    def from_mapping(cls, data: Any, origin: str = "catalog") -> Catalog:
        """``{item: {price_cents: int, stock: int}}`` -> Catalog (clear errors on bad input)."""
        if not isinstance(data, dict) or not data:
            raise ContractError("invalid_catalog", f"{origin}: expected a non-empty mapping of items")
        items: dict[str, CatalogItem] = {}
        for name, entry in data.items():
            if not isinstance(entry, dict):
                raise ContractError("invalid_catalog", f"{origin}.{name}: expected a mapping")
            price, stock = entry.get("price_cents"), entry.get("stock", 0)
            if type(price) is not int or price < 0 or type(stock) is not int or stock < 0:
                raise ContractError(
                    "invalid_catalog", f"{origin}.{name}: price_cents and stock must be integers >= 0")
            items[str(name)] = CatalogItem(price, stock)
        return cls(items)

    @classmethod
    def load(cls, path: str | Path | None) -> Catalog:
        """The default catalog, or the YAML file at ``path`` (``items:`` mapping or a bare mapping)."""
        if not path:
            return cls()
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ContractError("invalid_catalog", f"cannot read catalog {path}: {exc}") from None
        if isinstance(doc, dict) and "items" in doc:
            doc = doc["items"]
        return cls.from_mapping(doc, str(path))

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {name: {"price_cents": e.price_cents, "stock": e.stock} for name, e in self.items.items()}
