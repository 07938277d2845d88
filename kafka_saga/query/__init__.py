"""The query model (CQRS read side): the projections the HTTP read API serves — aggregates,
orders and their saga history, dead letters — followed from the topics."""
