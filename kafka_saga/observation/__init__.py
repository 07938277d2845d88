"""Observation: what every layer reports and how it is served — metrics, consume-loop
progress, and the small HTTP helpers (JSON errors, body limits, the metrics server).

It sits just above :mod:`kafka_saga.core` (and the base modules ``config`` and ``logs``)
and below the bus: the bus, the HTTP side, the roles and the runtime all report through
it; it imports none of them.
"""
