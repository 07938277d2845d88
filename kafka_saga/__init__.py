"""kafka_saga: an event-driven order platform on Apache Kafka, every role in one asyncio process."""

__version__ = "0.1.0"
