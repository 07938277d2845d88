"""The HTTP side (aiohttp): the read API over the query model, the command endpoints
(POST /orders, cancel), the administration endpoints (dead letters, metrics, health), the
dashboard and the OpenAPI document, composed by :func:`kafka_saga.api.app.create_app`.

Above the bus and the read model (:mod:`kafka_saga.query`), below the roles: the query role
serves it. It never imports the runtime.
"""
