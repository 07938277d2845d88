"""The bus: the one place that knows how to reach Kafka (producer, consumers, admin)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.transaction import InitProducerIdRequest

from .. import logs
from ..config import SASL_MECHANISMS, BadBootstrap, ConfigError, PartitionsDisagree, Settings
from ..observation.metrics import Metrics
from .ports import unknown_hosts
from .producer import Producer
from .topics import Topics, ensure_topics

log = logs.get("bus")
# COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR: retriable answers
_COORDINATOR_NOT_READY = (14, 15, 16)
PROBE_TRIES = 3  # transaction probes without an answer before exactly-once is given up
T = TypeVar("T")


class BrokerUnavailable(ConnectionError):
    """The broker could not be reached within the allowed time."""


class TopicNotFound(LookupError):
    """The broker answered: the topic does not exist."""


async def retry_until(what: str, bootstrap: str, op: Callable[[], Awaitable[T]],
                      timeout: float, first_delay: float = 0.2) -> T:
    """Run ``op`` until it succeeds, with exponential backoff and one clear log line per try."""
    deadline = time.monotonic() + timeout
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return await op()
        except (TopicNotFound, ConfigError):
            raise  # the broker answered, or the settings are wrong: retrying will not help
        except Exception as exc:  # noqa: BLE001 - the broker may fail in many ways at start-up
            unknown = await unknown_hosts(bootstrap)
            if unknown and len(unknown) == len(bootstrap.split(",")):
                raise BadBootstrap(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap!r}: no such host "
                                   f"{', '.join(unknown)}") from None
            if time.monotonic() + delay > deadline:
                raise BrokerUnavailable(f"{what}: broker {bootstrap} unreachable after "
                                        f"{attempt} tries: {exc}") from exc
            log.warning("broker not reachable yet, retrying", what=what, bootstrap=bootstrap,
                        attempt=attempt, retry_in_s=round(delay, 2), error=str(exc)[:200])
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class Bus:
    """Factory and owner of every Kafka client of one process."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.bootstrap = settings.client_bootstrap
        self.metrics = metrics or Metrics()
        self.topics = Topics(settings.topic_prefix)
        self._producer: Producer | None = None
        self._started = False
        self._idempotent = settings.idempotent_producer
        # the processing guarantee in force, chosen by start(): "exactly_once" or "at_least_once"
        self.processing = ""
        # the open transaction of each input partition held here (exactly-once only)
        self.transactions: dict[TopicPartition, Any] = {}

    @property
    def producer(self) -> Producer:
        """The process's one producer (created on first use, started by :meth:`start`)."""
        if self._producer is None:
            settings = self.settings
            self._producer = Producer(
                AIOKafkaProducer(
                    **self.options(), linger_ms=settings.linger_ms, acks="all",
                    enable_idempotence=bool(self._idempotent), max_batch_size=256 * 1024,
                    request_timeout_ms=settings.request_timeout_ms,
                ),
                self.metrics, fail_max=settings.breaker_fail_max, reset_s=settings.breaker_reset_s,
                retry_max_s=settings.send_retry_max_s, dlq_topic=self.topics.dlq,
            )
        return self._producer

    def options(self) -> dict[str, Any]:
        """Connection options shared by every client: bootstrap and security.

        ``KAFKA_SECURITY_PROTOCOL`` PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL; with SASL_*,
        ``KAFKA_SASL_MECHANISM`` PLAIN (default) | SCRAM-SHA-256 | SCRAM-SHA-512 and both
        ``KAFKA_SASL_USERNAME``/``KAFKA_SASL_PASSWORD``; with *SSL, an SSL context verifying
        the broker against ``KAFKA_SSL_CAFILE`` (else the system CAs), presenting
        ``KAFKA_SSL_CERTFILE``/``KAFKA_SSL_KEYFILE`` (``KAFKA_SSL_KEY_PASSWORD``) if given.
        Raises :class:`~kafka_saga.config.ConfigError` naming the setting that cannot work.
        """
        sec = self.settings.security
        protocol = sec.protocol  # one of SECURITY_PROTOCOLS: checked when the settings were read
        opts: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": protocol}
        if protocol.startswith("SASL_"):
            mechanism = sec.sasl_mechanism or "PLAIN"
            if mechanism not in SASL_MECHANISMS:
                raise ConfigError(f"KAFKA_SASL_MECHANISM={sec.sasl_mechanism!r}: use "
                                  f"{', '.join(SASL_MECHANISMS)}")
            if not sec.sasl_username or sec.sasl_password is None:
                raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME "
                                  "and KAFKA_SASL_PASSWORD")
            opts.update(sasl_mechanism=mechanism, sasl_plain_username=sec.sasl_username,
                        sasl_plain_password=sec.sasl_password)
        if protocol in ("SSL", "SASL_SSL"):
            import ssl

            from aiokafka.helpers import create_ssl_context

            if sec.ssl_keyfile and not sec.ssl_certfile:
                raise ConfigError("KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE")
            try:
                opts["ssl_context"] = create_ssl_context(
                    cafile=sec.ssl_cafile, certfile=sec.ssl_certfile, keyfile=sec.ssl_keyfile,
                    password=sec.ssl_password)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("cannot load the TLS files (KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE, "
                                  f"KAFKA_SSL_KEYFILE): {exc}") from None
        return opts

    async def grants_producer_ids(self) -> tuple[bool, str]:
        """Ask the broker for a producer id (InitProducerId), as an idempotent producer would.

        The answer, not the broker's name, decides: Apache Kafka grants one; a broker
        without a working InitProducerId errs or stays silent (5 s).
        """
        client = AIOKafkaClient(**self.options(), request_timeout_ms=5000)
        try:
            await client.bootstrap()
            nodes = [broker.nodeId for broker in client.cluster.brokers()]
            random.shuffle(nodes)
            why = "no node known"
            for node in nodes:  # a node down (a cluster's) is silence, not a "no": ask another
                try:
                    response = await self._ask_producer_id(client, node)
                except Exception as exc:
                    if not _unanswered(exc):
                        raise
                    why = f"InitProducerId failed: {str(exc)[:120] or type(exc).__name__}"
                    continue
                if response.error_code == 0 and response.producer_id >= 0:
                    return True, f"producer id {response.producer_id} granted"
                return False, f"InitProducerId answered error {response.error_code}"
            return False, why
        except Exception as exc:  # noqa: BLE001 - any other failure means "not supported here"
            return False, f"InitProducerId failed: {str(exc)[:120] or type(exc).__name__}"
        finally:
            await client.close()

    @staticmethod
    async def _ask_producer_id(client: AIOKafkaClient, node: int) -> Any:
        deadline = time.monotonic() + 15
        while True:
            response = await asyncio.wait_for(
                client.send(node, InitProducerIdRequest(transactional_id=None,
                                                        transaction_timeout_ms=60000)), 5)
            # a broker just started may still load its coordinator state: ask again
            if response.error_code not in _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                return response
            await asyncio.sleep(0.5)

    async def _choose_producer_mode(self) -> None:
        if self._idempotent is not None:
            log.info("producer mode set by KAFKA_ENABLE_IDEMPOTENCE", idempotent=self._idempotent,
                     acks="all")
            return
        self._idempotent, why = await self.grants_producer_ids()
        log.info("producer mode chosen from the broker's answer", idempotent=self._idempotent,
                 acks="all", reason=why)

    async def grants_transactions(self) -> tuple[bool, str]:
        """Begin and abort a transaction with a throw-away transactional id, as an exactly-once
        checkpoint would: the answer decides, not the broker's name. No answer (a cluster
        node down holds that id's coordinator) is not a "no": the probe tries again with
        another id, whose coordinator may be elsewhere, up to ``PROBE_TRIES`` times."""
        why = ""
        for attempt in range(1, PROBE_TRIES + 1):
            granted, why = await self._probe_transaction()
            if granted is not None:
                return granted, why
            log.warning("the transaction probe got no answer; trying another coordinator",
                        attempt=attempt, error=why)
        return False, f"no answer after {PROBE_TRIES} tries: {why}"

    async def _probe_transaction(self) -> tuple[bool | None, str]:
        """True/False for the broker's answer; None when it did not answer (10 s at most)."""
        probe = AIOKafkaProducer(**self.options(), enable_idempotence=True, acks="all",
                                 transactional_id=f"{self.topics.prefix}kafka-saga.probe."
                                                  f"{uuid.uuid4().hex[:12]}")
        try:
            await asyncio.wait_for(probe.start(), 10)
            await asyncio.wait_for(probe.begin_transaction(), 10)
            await asyncio.wait_for(probe.abort_transaction(), 10)
            return True, "a transaction was begun and aborted"
        except Exception as exc:  # noqa: BLE001 - an error answer means "not supported here"
            why = f"no transaction: {str(exc)[:120] or type(exc).__name__}"
            return (None if _unanswered(exc) else False), why
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(probe.stop(), 10)

    async def _choose_processing(self) -> None:
        wanted = self.settings.processing
        supported = False
        if wanted == "at_least_once":
            why = "set by KAFKA_SAGA_PROCESSING"
        elif self._idempotent is False and wanted == "auto":
            why = "the producer is not idempotent (no producer ids from this broker)"
        else:
            supported, why = await self.grants_transactions()
            if not supported and wanted == "exactly_once":
                raise ConfigError(f"KAFKA_SAGA_PROCESSING=exactly_once: the broker at "
                                  f"{self.bootstrap} has no transactions ({why}); use auto or "
                                  "at_least_once")
        self.processing = "exactly_once" if supported else "at_least_once"
        self.metrics.export_processing(self.processing)
        log.info("processing guarantee", processing=self.processing, requested=wanted, reason=why)

    @property
    def exactly_once(self) -> bool:
        return self.processing == "exactly_once"

    async def start(self, timeout: float = 60.0) -> None:
        if self._producer is None:
            await retry_until("broker handshake", self.bootstrap, self._choose_producer_mode, timeout)
        if not self.processing:
            await self._choose_processing()

        async def start_producer() -> None:
            try:
                await self.producer.start()
            except BaseException:
                await self.producer.kafka.stop()  # release the half-started client
                self._producer = None
                raise

        await retry_until("producer start", self.bootstrap, start_producer, timeout)
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.producer.stop()

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.options(), request_timeout_ms=10000)

    async def ensure_topics(self, timeout: float = 60.0) -> dict[str, str]:
        async def create() -> dict[str, str]:
            admin = self.admin()
            await admin.start()
            try:
                return await ensure_topics(admin, self.topics, self.settings.partitions,
                                           self.settings.replication_factor,
                                           self.settings.min_insync_replicas)
            finally:
                await admin.close()

        result = await retry_until("topic creation", self.bootstrap, create, timeout)
        created = sorted(t for t, s in result.items() if s == "created")
        if created:
            await self._until_led(created, timeout)
        if created:
            log.info("topics created", topics=created, partitions=self.settings.partitions)
        return result

    async def _until_led(self, topics: list[str], timeout: float) -> None:
        """Wait until every partition of ``topics`` has a leader in the metadata we are served.

        On Apache Kafka a created topic reaches the brokers' metadata a moment after
        CreateTopics answers; a client asking in between is told it does not exist.
        """
        client = AIOKafkaClient(**self.options(), request_timeout_ms=5000)
        deadline = time.monotonic() + timeout
        try:
            await client.bootstrap()
            while True:  # every broker that answers is asked: a client may ask any of them
                pending: set[str] = set()
                for broker in client.cluster.brokers():
                    try:
                        answer = await client.send(broker.nodeId, MetadataRequest(topics))
                    except Exception:  # noqa: BLE001, S112 - a broker that is down tells nothing
                        continue
                    view = ClusterMetadata()
                    view.update_metadata(answer)
                    pending.update(t for t in topics if len(view.available_partitions_for_topic(t) or ())
                                   < self.settings.partitions)
                if not pending:
                    return
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"topics without leaders after {timeout:.0f}s: {sorted(pending)}")
                await asyncio.sleep(0.1)
        finally:
            await client.close()

    async def list_topics(self) -> list[str]:
        admin = self.admin()
        await admin.start()
        try:
            return sorted(await admin.list_topics())
        finally:
            await admin.close()

    def consumer(self, *topics: str, group_id: str | None = None, **overrides: Any) -> AIOKafkaConsumer:
        options: dict[str, Any] = {
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": self.settings.batch_max_records,
            "fetch_max_wait_ms": self.settings.fetch_max_wait_ms,
            "session_timeout_ms": self.settings.session_timeout_ms,
            "heartbeat_interval_ms": min(1000, self.settings.session_timeout_ms // 3),
            "metadata_max_age_ms": 30000,
            # records of aborted or open transactions are never seen (exactly-once); where
            # nothing is transactional (Tansu, at-least-once) this is every record
            "isolation_level": "read_committed",
        }
        options.update(overrides)
        return AIOKafkaConsumer(*topics, **self.options(), **options)

    async def started_consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        """A started consumer; a failed start releases its connections before raising."""
        consumer = self.consumer(*topics, **options)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def partitions(self, topic: str) -> list[TopicPartition]:
        """The partitions of a topic (raises ``LookupError`` when it does not exist)."""
        consumer = await self.started_consumer()
        try:
            return await _partitions(consumer, topic)
        finally:
            await consumer.stop()

    async def require_copartitioned(self, topics: tuple[str, ...], why: str) -> None:
        """Raise :class:`PartitionsDisagree` (no restart can fix it) unless ``topics`` all have the
        same partition count; ``why`` says what needs it."""
        counts = {t: len(await self.partitions(t)) for t in topics}
        if len(set(counts.values())) > 1:
            most = max(counts.values())
            raise PartitionsDisagree(
                ", ".join(f"{t} has {n} partitions" for t, n in counts.items()) + f": {why}; "
                f"add partitions to reach {most} on each (kafka-topics.sh --alter --partitions "
                f"{most}) or recreate the topics with one KAFKA_SAGA_PARTITIONS")

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        """The exact end of every partition of ``topic``, as it is now.

        ListOffsets(latest) is a lower bound only (some Kafka-protocol brokers report the
        last batch's base offset), so each partition is also fetched once from that offset:
        the high watermark of a fetch response is the true end. On Apache Kafka both agree.
        Our readers read committed records only, so the end is the fetch's last stable offset:
        an open transaction (say, of a producer killed mid-transaction) holds records beyond
        it that no reader can see until that transaction ends, up to its timeout.
        """
        consumer = await self.started_consumer(fetch_max_wait_ms=50,
                                               max_partition_fetch_bytes=64 * 1024)
        try:
            tps = await _partitions(consumer, topic)
            consumer.assign(tps)
            listed = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, listed[tp])
            deadline = time.monotonic() + 15
            while any(consumer.highwater(tp) is None for tp in tps):
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"no fetch answer for {topic} within 15s")
                await consumer.getmany(timeout_ms=100)
            return {tp: max(listed[tp], visible_end(consumer, tp) or 0) for tp in tps}
        finally:
            await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    # fresh metadata of every topic; the consumer's own cache may know only its subscriptions
    # (Apache Kafka answers a client's first, topic-less metadata request with no topics)
    cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001
    parts = cluster.partitions_for_topic(topic)
    if not parts:
        raise TopicNotFound(f"topic {topic} does not exist")
    return [TopicPartition(topic, p) for p in sorted(parts)]


def visible_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The end of ``tp`` a read-committed reader can reach, as its last fetch said: the last
    stable offset (records beyond it wait on an open transaction), else the high watermark;
    None before any fetch answered."""
    stable = consumer.last_stable_offset(tp)
    return stable if stable is not None and stable >= 0 else consumer.highwater(tp)


def _unanswered(exc: BaseException) -> bool:
    """Whether a failed request got no answer (a node down, a timeout): not a "no"."""
    return isinstance(exc, (TimeoutError, KafkaConnectionError)) or bool(getattr(exc, "retriable", False))
