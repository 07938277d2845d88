"""Command line: ``kafka-saga run | broker | topics | submit | cancel | dlq | replay | asyncapi``.

Also ``python -m kafka_saga``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from . import logs
from .bus.client import BrokerUnavailable, Bus, retry_until
from .bus.follow import read_topic
from .bus.kafka_jars import LaunchError
from .config import DEFAULT_BOOTSTRAP, ConfigError, Settings, parse_roles
from .replay import PARALLEL_FROM

# command-line flag (argparse dest) -> the setting it overrides; a flag left out keeps the
# environment's value. `--port` is the query API's for `run` and the local broker's for `broker`.
_FLAGS = {"bootstrap_servers": "bootstrap_servers", "partitions": "partitions",
          "host": "query_host", "engine": "engine", "data_dir": "kafka_data_dir"}
_PORT = {"run": "query_port", "broker": "embedded_port"}


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings of this command: the environment, the role list, the flags; read once."""
    overrides = {name: getattr(args, flag) for flag, name in _FLAGS.items() if getattr(args, flag, None)}
    port = getattr(args, "port", None)
    if args.command in _PORT and port is not None and (port or args.command == "run"):
        overrides[_PORT[args.command]] = port
    return Settings.from_env(overrides=overrides, roles_file=getattr(args, "config", None))


# --- run / broker ----------------------------------------------------------------------

def cmd_run(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from .roles import ROLES
    from .runtime.platform import run_with_signals

    settings = settings or settings_from(args)
    if args.config:
        names = list(settings.listed_roles)
        if args.roles:
            names = [n for n in parse_roles(args.roles) if n in names]
    else:
        names = parse_roles(args.roles if args.roles is not None else "all")
    missing = [n for n in names if n not in ROLES]
    names = [n for n in names if n in ROLES]
    log = logs.get("cli")
    if missing:
        log.warning("roles not available in this build, skipped", roles=missing)
    if not names:
        raise ConfigError("no role to run")
    from .runtime import eventloop

    eventloop.tune_gc(settings.gc_threshold)
    return eventloop.run(run_with_signals(settings, names), settings.event_loop)


def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from .bus.embedded import EmbeddedBroker

    if settings.engine == "kafka":
        from .bus.kafka_engine import KafkaCluster
        from .runtime.kafka_process import serve

        return serve(KafkaCluster.for_settings(settings, settings.kafka_data_dir, nodes=args.nodes,
                                               port=settings.embedded_port))
    if args.nodes != 1 or args.data_dir:
        raise ConfigError("--nodes and --data-dir apply to --engine kafka (Tansu is one "
                          "memory-only node)")
    broker = EmbeddedBroker(settings.embedded_port, log_level=settings.tansu_log)
    broker.spawn()
    log = logs.get("cli")
    stopping = False

    def stop(_sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if broker.process and broker.process.poll() is None:
            broker.process.terminate()  # the main thread's wait() then returns

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        from .bus.embedded import wait_until_ready

        asyncio.run(wait_until_ready(broker.bootstrap))
        log.info("embedded broker ready (memory-only)", bootstrap=broker.bootstrap)
        code = broker.process.wait() if broker.process else 1
    finally:
        broker.stop()
    return 0 if stopping else code


# --- topics ----------------------------------------------------------------------------

async def _topics(args: argparse.Namespace, settings: Settings) -> int:
    bus = Bus(settings)
    if args.action == "create":
        result = await bus.ensure_topics(timeout=args.timeout)
        for topic, state in sorted(result.items()):
            print(f"{topic}\t{state}")
    else:
        for topic in await retry_until("topic list", bus.bootstrap, bus.list_topics, args.timeout):
            print(topic)
    return 0


# --- dlq -------------------------------------------------------------------------------

async def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table

    from .bus import reinject

    bus = Bus(settings)
    letters = reinject.select(await reinject.read_dead_letters(bus, args.timeout),
                              reason=args.reason or None)
    console = Console()
    if args.action == "list":
        table = Table(title=f"{bus.topics.dlq}: {len(letters)} record(s)")
        for column in ("P:O", "reason", "origin", "role", "key", "published", "reinjected", "error"):
            table.add_column(column, overflow="fold")
        for _, d in letters[-args.limit:]:
            origin = f"{d.origin_topic}:{d.origin_partition}:{d.origin_offset}" if d.is_dead_letter else "-"
            table.add_row(f"{d.partition}:{d.offset}", d.reason or "(garbage)", origin, d.role,
                          d.key or "", d.published, str(d.reinjected), d.error[:120])
        console.print(table)
        return 0
    # replay: re-inject into the origin topic (the same code as POST /dlq/replay)
    if args.offset:
        try:
            offset = reinject.parse_offset(args.offset)
        except ValueError as exc:
            raise ConfigError(f"--offset {exc}") from None
        try:
            letters = reinject.select(letters, offset=offset)
        except reinject.NoSuchDeadLetter as exc:
            print(str(exc), file=sys.stderr)
            return 1
    async with bus:
        sent = await reinject.reinject(bus, letters)
    for d in sent:
        print(f"re-injected {d.partition}:{d.offset} -> {d.origin_topic} (reason {d.reason})")
    print(f"{len(sent)} record(s) re-injected")
    return 0


# --- submit / cancel -------------------------------------------------------------------

def _attributes(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--attr {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


async def _submit(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    from .core.catalog import Catalog
    from .core.fields import ContractError
    from .core.submission import new_order_command, parse_order_request

    body: dict[str, Any] = {"user": args.user, "item": args.item, "quantity": args.quantity,
                            "attributes": _attributes(args.attr)}
    if args.price_cents is not None:
        body["price_cents"] = args.price_cents
    try:
        order = parse_order_request(body)
    except ContractError as exc:
        raise ConfigError(str(exc)) from None
    command = new_order_command(order["user"], order["item"], order["quantity"],
                                Catalog.load(settings.catalog_path), attributes=order["attributes"],
                                price_cents=order["price_cents"], order_id=args.order_id)
    async with Bus(settings) as bus:
        await bus.producer.send_and_wait(bus.topics.commands, command.encode(), command.key)
    print(orjson.dumps({"order_id": command.snapshot.order_id, "saga_id": command.saga_id,
                        "command_id": command.command_id}).decode())
    return 0


async def _cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Find the order's saga in orders.events, then send an ``OrderReject`` to the partition
    owning it on orders.replies: its command's, named by its events' reply-partition header.

    Every partition is read: the client that wrote the order may have partitioned it with
    any hash and any key, so no partitioner tells where the saga is. The order's saga is its
    first (an order submitted twice has a second saga, which the tracker rejects)."""
    from .core.contracts import Event, reply_partition
    from .core.submission import reject_command

    bus = Bus(settings)
    key = args.order_id.encode()
    found: list[tuple[int, int | None, Event]] = []  # (timestamp, partition, first event of a saga)
    sagas: set[str] = set()

    def find(record: Any) -> None:
        if key not in record.value:  # cheap: most events are of other orders
            return
        try:
            event = Event.decode(record.value)
        except ValueError:
            return
        if event.snapshot.order_id == args.order_id and event.saga_id not in sagas:
            sagas.add(event.saga_id)
            found.append((record.timestamp or 0, reply_partition(record.headers), event))

    await read_topic(bus, bus.topics.events, find, args.timeout)
    if not found:
        print(f"kafka-saga: no saga found for order {args.order_id}", file=sys.stderr)
        return 1
    _, partition, event = min(found, key=lambda f: (f[0], f[2].occurred_at))
    command = reject_command(args.order_id, event.saga_id, event.snapshot, args.reason, "cli")
    async with bus:
        await bus.producer.send(bus.topics.replies, command.encode(), command.key, partition=partition)
        await bus.producer.flush()
    print(f"reject sent for order {args.order_id} (saga {event.saga_id}, reason {args.reason})")
    return 0


# --- replay ----------------------------------------------------------------------------

async def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import Progress

    from .replay import compare, fetch_live, replay_events, write_atomically

    bus = Bus(settings)
    if sys.stderr.isatty():
        with Progress(transient=True) as progress:
            task = progress.add_task("replaying orders.events", total=None)
            result = await replay_events(
                bus, lambda done, total: progress.update(task, completed=done, total=total),
                args.timeout, window=settings.state_window, workers=args.workers)
    else:
        result = await replay_events(bus, timeout=args.timeout, window=settings.state_window,
                                     workers=args.workers)
    document = result.document()
    write_atomically(args.output, document)
    print(f"replayed {result.events} events ({result.skipped} skipped) into "
          f"{len(document['aggregates'])} aggregates -> {args.output}")
    if args.compare:
        live = await fetch_live(args.compare)
        diffs = compare(document["aggregates"], live)
        for line in diffs:
            print(line)
        print(f"{len(diffs)} difference(s) with {args.compare}")
        return 1 if diffs else 0
    return 0


def cmd_asyncapi(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    from .asyncapi import document
    from .bus.topics import Topics

    doc = document(Topics(settings.topic_prefix), settings.partitions, settings.client_bootstrap)
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


# --- parser ----------------------------------------------------------------------------

def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kafka-saga", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_broker(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--bootstrap-servers", help="Kafka bootstrap servers "
                       f"(default: $KAFKA_BOOTSTRAP_SERVERS, else {DEFAULT_BOOTSTRAP})")
        return p

    run = with_broker(sub.add_parser("run", help="run roles (embedded broker when none is given)"))
    run.add_argument("--roles", help="'all' or a comma-separated list (default: all)")
    run.add_argument("--config", help="YAML role list")
    run.add_argument("--host", help=f"query API bind address (default $QUERY_API_HOST or {Settings.query_host})")
    run.add_argument("--port", type=int, help=f"query API port (default $QUERY_API_PORT or {Settings.query_port})")
    run.set_defaults(func=cmd_run)

    broker = sub.add_parser("broker", help="run a local broker in the foreground: the embedded "
                            "Tansu (memory-only) or Apache Kafka (durable, 1 or 3 nodes)")
    broker.add_argument("--engine", choices=("tansu", "kafka"),
                        help=f"default $KAFKA_SAGA_ENGINE, else {Settings.engine}")
    broker.add_argument("--nodes", type=int, choices=(1, 3), default=1,
                        help="kafka: nodes, each a broker and a controller (default 1)")
    broker.add_argument("--port", type=int, help="first client port; kafka nodes use PORT..PORT+N-1 "
                        "and controllers the N ports after (default $KAFKA_SAGA_EMBEDDED_PORT or "
                        f"{Settings.embedded_port})")
    broker.add_argument("--data-dir", help="kafka: where the nodes keep their data "
                        f"(default $KAFKA_SAGA_KAFKA_DATA_DIR or {Settings.kafka_data_dir})")
    broker.set_defaults(func=cmd_broker)

    topics = with_broker(sub.add_parser("topics", help="create or list topics"))
    topics.add_argument("action", choices=("create", "list"))
    topics.add_argument("--partitions", type=int, help=f"partitions per topic (default $KAFKA_SAGA_PARTITIONS or {Settings.partitions})")
    topics.add_argument("--timeout", type=float, default=30.0)
    topics.set_defaults(func=lambda a, s: asyncio.run(_topics(a, s)))

    dlq = with_broker(sub.add_parser("dlq", help="inspect or re-inject dead letters"))
    dlq.add_argument("action", choices=("list", "replay"))
    dlq.add_argument("--limit", type=_positive_int, default=50)
    dlq.add_argument("--reason", help="only records with this reason")
    group = dlq.add_mutually_exclusive_group()
    group.add_argument("--offset", help="replay: PARTITION:OFFSET of one DLQ record")
    group.add_argument("--all", action="store_true", help="replay: every (matching) record")
    dlq.add_argument("--timeout", type=float, default=60.0)
    dlq.set_defaults(func=lambda a, s: asyncio.run(_dlq(a, s)))

    submit = with_broker(sub.add_parser("submit", help="submit an order (an OrderCreate command)"))
    submit.add_argument("--user", required=True)
    submit.add_argument("--item", required=True)
    submit.add_argument("--quantity", type=int, default=1)
    submit.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE",
                        help="order attribute, e.g. payment=decline (repeatable)")
    submit.add_argument("--price-cents", type=int, help="override the catalog price")
    submit.add_argument("--order-id", help="order id (default: a new one)")
    submit.set_defaults(func=lambda a, s: asyncio.run(_submit(a, s)))

    cancel = with_broker(sub.add_parser("cancel", help="reject an order's saga (compensates it)"))
    cancel.add_argument("order_id")
    cancel.add_argument("--reason", default="cancelled")
    cancel.add_argument("--timeout", type=float, default=60.0)
    cancel.set_defaults(func=lambda a, s: asyncio.run(_cancel(a, s)))

    asyncapi = sub.add_parser("asyncapi", help="print the AsyncAPI 3.0 document of the topics")
    asyncapi.add_argument("--partitions", type=int, help=f"partitions per topic (default $KAFKA_SAGA_PARTITIONS or {Settings.partitions})")
    asyncapi.set_defaults(func=cmd_asyncapi)

    replay = with_broker(sub.add_parser("replay", help="rebuild the projections from orders.events"))
    replay.add_argument("--output", default="replay-projections.json")
    replay.add_argument("--compare", metavar="URL", help="diff with a live query API")
    replay.add_argument("--timeout", type=float, default=300.0)
    replay.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes folding the partitions (default: one per core; one "
                             f"process below {PARALLEL_FROM:,} events)")
    replay.set_defaults(func=lambda a, s: asyncio.run(_replay(a, s)))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"kafka-saga: configuration error: {exc}", file=sys.stderr)
        return exc.exit_code
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "dlq" and args.action == "replay" and not (args.offset or args.all):
        print("kafka-saga dlq replay: give --offset P:O or --all", file=sys.stderr)
        return 2
    if args.command != "run":  # short commands: our own messages say what failed, once
        import logging

        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    runner: Callable[[argparse.Namespace, Settings], int | Awaitable[int]] = args.func
    try:
        return int(runner(args, settings) or 0)  # type: ignore[arg-type]
    except ConfigError as exc:
        print(f"kafka-saga: configuration error: {exc}", file=sys.stderr)
        return exc.exit_code
    except LaunchError as exc:
        print(f"kafka-saga: {exc}", file=sys.stderr)
        return 1
    except (BrokerUnavailable, TimeoutError, LookupError) as exc:
        print(f"kafka-saga: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
