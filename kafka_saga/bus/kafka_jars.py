"""Apache Kafka's broker jars and the Java to run them: what the launcher needs before a node starts.

The jars come from ``$KAFKA_SAGA_KAFKA_HOME/libs`` (an unpacked distribution) or from a
git-ignored cache that Maven fills from ``scripts/kafka/pom.xml`` (``make kafka-jars``, or
here on first use). Every refusal is a :class:`LaunchError`: one line meant for a human.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from .. import logs

log = logs.get("kafka")

KAFKA_VERSION = "3.9.1"  # also compose.yaml's image and scripts/kafka/pom.xml
MIN_JAVA = 11
REPO = Path(__file__).resolve().parents[2]
POM = REPO / "scripts" / "kafka" / "pom.xml"


class LaunchError(RuntimeError):
    """Kafka cannot be started as asked; the message says why, in one line."""


# --- Java and the jars ---------------------------------------------------------------------

def java_binary(home: str | None = None) -> str:
    """The ``java`` to run: ``home/bin/java`` (``Settings.java_home``, ``JAVA_HOME``), else the
    one on PATH; checked for version."""
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() \
        else shutil.which("java")
    if not java:
        raise LaunchError(f"java not found (Apache Kafka {KAFKA_VERSION} needs Java {MIN_JAVA} or "
                          "newer): install a JDK or set JAVA_HOME")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaunchError(f"cannot run {java} -version: {exc}") from None
    major = java_major(out.stderr + out.stdout)
    if major is None:
        raise LaunchError(f"cannot tell the Java version of {java}: {out.stderr.strip()[:200]}")
    if major < MIN_JAVA:
        raise LaunchError(f"{java} is Java {major}; Apache Kafka {KAFKA_VERSION} needs Java "
                          f"{MIN_JAVA} or newer (set JAVA_HOME to a newer JDK)")
    return java


def java_major(version_text: str) -> int | None:
    """The major version in ``java -version``'s output ("1.8.0_292" is 8, "17.0.15" is 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def jar_cache(cache: str | None = None) -> Path:
    """Where ``make kafka-jars`` puts the jars (git-ignored), unless ``cache``
    (``Settings.kafka_cache``, ``KAFKA_SAGA_KAFKA_CACHE``) says otherwise."""
    return Path(cache or REPO / ".cache" / "kafka" / KAFKA_VERSION)


def libs_dir(home: str | None = None, cache: str | None = None, resolve: bool = True) -> Path:
    """The directory of Kafka's jars: ``home/libs`` (``Settings.kafka_home``,
    ``KAFKA_SAGA_KAFKA_HOME``), else the cache's; resolves them with Maven when missing."""
    if home:
        libs = Path(home) / "libs"
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise LaunchError(f"KAFKA_SAGA_KAFKA_HOME={home}: no libs/kafka_2.13-*.jar there "
                              "(point it at an unpacked Apache Kafka distribution)")
        return libs
    libs = jar_cache(cache) / "libs"
    if (libs / ".complete").exists():
        return libs
    if not resolve:
        raise LaunchError(f"Kafka jars missing in {libs}: run `make kafka-jars`")
    return resolve_jars(libs)


def resolve_jars(libs: Path) -> Path:
    """Copy ``kafka_2.13`` and its runtime dependencies into ``libs`` with Maven."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LaunchError("Kafka jars are missing and mvn is not installed: install Maven, or set "
                          "KAFKA_SAGA_KAFKA_HOME to an unpacked Apache Kafka distribution")
    if not POM.exists():
        raise LaunchError(f"Kafka jars are missing and {POM} is not there (not a source checkout?): "
                          "set KAFKA_SAGA_KAFKA_HOME to an unpacked Apache Kafka distribution")
    log.info("Kafka jars missing: resolving them with Maven (once)", version=KAFKA_VERSION, into=str(libs))
    if libs.exists():
        shutil.rmtree(libs)
    started = time.monotonic()
    out = subprocess.run(
        [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime",
         f"-DoutputDirectory={libs}"], capture_output=True, text=True)
    if out.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        errors = [line.replace("[ERROR]", "").strip() for line in (out.stdout + out.stderr).splitlines()
                  if "ERROR" in line]
        telling = [e for e in errors if re.search(r"Could not|Non-parseable|Failed|resolve|host", e)]
        detail = (telling or errors or [(out.stdout + out.stderr).strip()[-300:]])[0]
        raise LaunchError(f"Maven could not resolve org.apache.kafka:kafka_2.13:{KAFKA_VERSION}: "
                          f"{detail[:300]}")
    (libs / ".complete").write_text(KAFKA_VERSION + "\n")
    log.info("Kafka jars resolved", jars=len(list(libs.glob("*.jar"))),
             seconds=round(time.monotonic() - started, 1))
    return libs
