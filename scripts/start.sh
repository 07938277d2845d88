#!/usr/bin/env bash
# Start the platform as separate processes, one per role, then the demo generator.
#
#   scripts/start.sh            # broker (if needed), topics, roles in the background, demo in front
#   scripts/stop.sh             # stops every process this script started
#
# Without KAFKA_BOOTSTRAP_SERVERS, the embedded broker runs as its own background process
# (`kafka_saga broker`) on 127.0.0.1:${KAFKA_SAGA_EMBEDDED_PORT:-9092}, and every role is
# pointed at it (a role given KAFKA_BOOTSTRAP_SERVERS never starts a broker of its own).
# Each role (tracker, aggregator, orchestrator, dlq, query) runs as
# `python -m kafka_saga run --roles <role>`, in its own session so that a Ctrl-C aimed at the
# demo leaves it running, with its output in logs/<role>.log and its PID in pids/<role>.pid.
# The demo generator runs in the foreground (DEMO_RATE, DEMO_COUNT); Ctrl-C stops it, and
# the roles keep running until scripts/stop.sh.
#
# Environment:
#   KAFKA_BOOTSTRAP_SERVERS    external Kafka; unset: start the embedded broker
#   KAFKA_SAGA_EMBEDDED_PORT   port of the embedded broker (default 9092)
#   KAFKA_SAGA_RUN_DIR         where logs/ and pids/ go (default: the repository root)
#   AGGREGATOR_METRICS_PORT, TRACKER_METRICS_PORT, DLQ_METRICS_PORT, ORCHESTRATOR_METRICS_PORT,
#   INVENTORY_METRICS_PORT     metrics servers (defaults 9101 to 9105, as deploy/prometheus scrapes)
#   QUERY_API_PORT             query API (default 8080)
#   START_NO_DEMO=1            start everything but the demo, then return
#   START_WAIT_TRIES           readiness polls of the broker and the roles, 0.5 s apart (default 60)
# Every other setting of kafka_saga (README, Configuration) reaches each process unchanged.
set -Eeuo pipefail  # -E: the ERR trap below also fires inside functions

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
else
    PYTHON="$(command -v python3 || true)"
    [[ -n "$PYTHON" ]] || { echo "start.sh: no .venv/bin/python and no python3 on PATH" >&2; exit 1; }
fi

# shellcheck source=lib/pids.sh
source "$ROOT/scripts/lib/pids.sh"  # RUN_DIR, PID_DIR, write_pid, read_pid, pid_alive
LOG_DIR="$RUN_DIR/logs"
ROLES=(tracker aggregator inventory orchestrator dlq query)
TRIES="${START_WAIT_TRIES:-60}"

export AGGREGATOR_METRICS_PORT="${AGGREGATOR_METRICS_PORT:-9101}"
export TRACKER_METRICS_PORT="${TRACKER_METRICS_PORT:-9102}"
export DLQ_METRICS_PORT="${DLQ_METRICS_PORT:-9103}"
export ORCHESTRATOR_METRICS_PORT="${ORCHESTRATOR_METRICS_PORT:-9104}"
export INVENTORY_METRICS_PORT="${INVENTORY_METRICS_PORT:-9105}"
export QUERY_API_PORT="${QUERY_API_PORT:-8080}"

say() { printf 'start.sh: %s\n' "$*"; }

# --- helpers -----------------------------------------------------------------------------

# Replace the current (background) shell by a command in a new session, so the terminal's
# Ctrl-C does not reach it; `detached CMD... &` makes $! the command's own PID (setsid, or
# Python's os.setsid, then exec: no process in between). Only ever call it with `&`.
detached() {
    if command -v setsid >/dev/null 2>&1; then
        exec setsid "$@"
    fi
    exec "$PYTHON" -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' "$@"
}

# start_bg NAME ARGS... : `python -m kafka_saga ARGS` in the background, log and pid file NAME
start_bg() {
    local name="$1"
    shift
    detached "$PYTHON" -m kafka_saga "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
    local pid=$!
    write_pid "$name" "$pid"
    say "$name started (pid $pid, log ${LOG_DIR}/$name.log)"
}

cleanup_on_failure() {
    trap - ERR INT TERM
    say "start failed; stopping what was started" >&2
    KAFKA_SAGA_RUN_DIR="$RUN_DIR" "$ROOT/scripts/stop.sh" >&2 || true
    exit 1
}

fail() {
    echo "start.sh: $*" >&2
    cleanup_on_failure
}

show_log() {
    local file="$LOG_DIR/$1.log"
    if [[ -s "$file" ]]; then
        echo "--- last lines of $file ---" >&2
        tail -n 20 "$file" >&2
    fi
}

# every URL answers with HTTP 200 (exit 0), else exit 1
http_ok() {
    "$PYTHON" - "$@" <<'PY'
import sys
import urllib.request

try:
    for url in sys.argv[1:]:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status != 200:
                sys.exit(1)
except Exception:
    sys.exit(1)
PY
}

# --- refuse to start twice -----------------------------------------------------------------

mkdir -p "$LOG_DIR" "$PID_DIR"
for file in "$PID_DIR"/*.pid; do
    [[ -e "$file" ]] || continue
    pid="$(read_pid "$file")"
    if [[ -n "$pid" ]] && pid_alive "$pid"; then
        echo "start.sh: already running ($(basename "$file" .pid), pid $pid); run scripts/stop.sh first" >&2
        exit 1
    fi
    rm -f "$file"  # stale: its process is gone
done

trap cleanup_on_failure ERR
trap 'echo "start.sh: interrupted" >&2; cleanup_on_failure' INT TERM  # until the platform is up

# --- the broker ------------------------------------------------------------------------------

if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    port="${KAFKA_SAGA_EMBEDDED_PORT:-9092}"
    if ! "$PYTHON" -c 'import sys; from kafka_saga.bus.ports import port_is_free; sys.exit(0 if port_is_free(int(sys.argv[1])) else 1)' "$port"; then
        fail "port $port is taken; set KAFKA_SAGA_EMBEDDED_PORT to a free port (or KAFKA_BOOTSTRAP_SERVERS to use that broker)"
    fi
    start_bg broker broker --port "$port"
    export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$port"
    # the embedded broker has no idempotent producer
    export KAFKA_ENABLE_IDEMPOTENCE=false
    broker_pid="$(read_pid "$PID_DIR/broker.pid")"
else
    broker_pid=""
    say "using Kafka at $KAFKA_BOOTSTRAP_SERVERS"
fi

say "waiting for the broker at $KAFKA_BOOTSTRAP_SERVERS"
ready=""
for ((i = 0; i < TRIES; i++)); do
    if [[ -n "$broker_pid" ]] && ! pid_alive "$broker_pid"; then
        show_log broker
        fail "the embedded broker exited"
    fi
    if "$PYTHON" -m kafka_saga topics list --bootstrap-servers "$KAFKA_BOOTSTRAP_SERVERS" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.5
done
if [[ -z "$ready" ]]; then
    show_log broker
    fail "no broker answered at $KAFKA_BOOTSTRAP_SERVERS after $TRIES tries"
fi

# --- topics and roles ------------------------------------------------------------------------

"$PYTHON" -m kafka_saga topics create >"$LOG_DIR/topics.log" 2>&1 || {
    show_log topics
    fail "topic creation failed"
}
say "topics created (${LOG_DIR}/topics.log)"

for role in "${ROLES[@]}"; do
    start_bg "$role" run --roles "$role"
done

# ready: every role alive, the query API caught up, every metrics server answering
query_host="${QUERY_API_HOST:-127.0.0.1}"
[[ "$query_host" != "0.0.0.0" && "$query_host" != "::" ]] || query_host=127.0.0.1
urls=()
[[ "$QUERY_API_PORT" == "0" ]] || urls+=("http://$query_host:$QUERY_API_PORT/readyz")  # 0: any port
for port in "$AGGREGATOR_METRICS_PORT" "$TRACKER_METRICS_PORT" "$DLQ_METRICS_PORT" \
            "$ORCHESTRATOR_METRICS_PORT" "$INVENTORY_METRICS_PORT"; do
    urls+=("http://$query_host:$port/metrics")
done
ready=""
for ((i = 0; i < TRIES; i++)); do
    for role in "${ROLES[@]}"; do
        if ! pid_alive "$(read_pid "$PID_DIR/$role.pid")"; then
            show_log "$role"
            fail "role $role exited during start-up"
        fi
    done
    if http_ok "${urls[@]}"; then
        ready=1
        break
    fi
    sleep 0.5
done
[[ -n "$ready" ]] || fail "the roles did not become ready after $TRIES tries (see ${LOG_DIR}/)"

say "platform ready: query API http://$query_host:$QUERY_API_PORT, metrics on ports" \
    "$AGGREGATOR_METRICS_PORT (aggregator), $TRACKER_METRICS_PORT (tracker), $DLQ_METRICS_PORT (dlq)," \
    "$ORCHESTRATOR_METRICS_PORT (orchestrator), $INVENTORY_METRICS_PORT (inventory)"
trap - ERR INT TERM

if [[ "${START_NO_DEMO:-}" == "1" ]]; then
    say "START_NO_DEMO=1: no demo; stop everything with scripts/stop.sh"
    exit 0
fi

# --- the demo, in front ------------------------------------------------------------------------

say "demo generator: ${DEMO_RATE:-5} orders/s, ${DEMO_COUNT:-0} in all (0 = unlimited); Ctrl-C stops it"
"$PYTHON" -m kafka_saga run --roles demo &
demo_pid=$!
write_pid demo "$demo_pid"
# Ctrl-C reaches the demo directly (same process group); the trap keeps this script alive to
# tidy up, and passes an INT or TERM sent to this script on to the demo. stop.sh signals the
# demo by its pid file.
trap 'kill -INT "$demo_pid" 2>/dev/null || true' INT TERM
set +e
wait "$demo_pid"
status=$?
while ((status > 128)) && pid_alive "$demo_pid"; do
    wait "$demo_pid"
    status=$?
done
set -e
trap - INT TERM
rm -f "$PID_DIR/demo.pid"
if compgen -G "$PID_DIR/*.pid" >/dev/null; then
    say "demo stopped (exit $status); the roles are still running: scripts/stop.sh stops them"
else
    say "demo stopped (exit $status)"
fi
exit "$status"
