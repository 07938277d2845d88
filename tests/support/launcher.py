"""What the Apache Kafka launcher tests share: the CLI, time limits, Java and the jars."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kafka_saga.bus.kafka_jars import LaunchError, java_binary, libs_dir
from kafka_saga.config import Settings

from .engines import kafka_unavailable

CLI = str(Path(sys.executable).parent / "kafka-saga")
READY_S = 240.0  # a JVM per node on a shared, busy machine
ERROR_S = 180.0  # an error case may format a node (one JVM) before it is refused
NO_TRACE = ("Traceback", "Exception in thread")
LEFT_DOWN = "Kafka node exited; left down (SIGHUP starts it again)"


def java_and_jars() -> tuple[str, Path]:
    """Java and the jars, checked once per module: it is skipped (or failed) without them."""
    try:
        settings = Settings.from_env()
        return java_binary(settings.java_home), libs_dir(settings.kafka_home, settings.kafka_cache)
    except LaunchError as exc:
        kafka_unavailable(str(exc))  # skips or fails
        raise


def cli_env(**extra: str) -> dict[str, str]:
    """This environment without broker settings (the jar location stays), JSON logs."""
    keep = ("KAFKA_SAGA_KAFKA_HOME", "KAFKA_SAGA_KAFKA_CACHE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_") or k in keep}
    return {**env, "LOG_FORMAT": "json", "LOG_LEVEL": "info", **extra}
