#!/usr/bin/env bash
# Stop what scripts/start.sh started: exactly the PIDs recorded in pids/*.pid, nothing else.
#
# Order: the demo, then the roles (all at once), then the embedded broker, so the roles
# commit their offsets while the broker still answers. Each group gets SIGTERM, up to
# STOP_TIMEOUT_S seconds (default 10) to exit, then SIGKILL. A PID whose process is gone,
# or that now belongs to a process other than kafka_saga, is not signalled; every pid file
# is removed. KAFKA_SAGA_RUN_DIR chooses the folder that holds pids/ (default: repository root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# shellcheck source=lib/pids.sh
source "$ROOT/scripts/lib/pids.sh"  # RUN_DIR, PID_DIR, read_pid, pid_alive, is_ours
TIMEOUT="${STOP_TIMEOUT_S:-10}"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || { echo "stop.sh: STOP_TIMEOUT_S must be a whole number of seconds" >&2; exit 2; }

say() { printf 'stop.sh: %s\n' "$*"; }

if [[ ! -d "$PID_DIR" ]] || ! compgen -G "$PID_DIR/*.pid" >/dev/null; then
    say "nothing to stop (no pid files in $PID_DIR)"
    exit 0
fi

failed=0

# stop_group NAME... : SIGTERM each, wait for all of them, SIGKILL the ones left
stop_group() {
    local name file pid
    local -a names=() pids=()
    for name in "$@"; do
        file="$PID_DIR/$name.pid"
        [[ -e "$file" ]] || continue
        pid="$(read_pid "$file")"
        if [[ -z "$pid" ]]; then
            say "$name: pid file without a pid, removed"
        elif ! pid_alive "$pid"; then
            say "$name: pid $pid was not running, pid file removed"
        elif ! is_ours "$pid"; then
            say "$name: pid $pid is no longer a kafka_saga process, left alone; pid file removed"
        elif kill -TERM "$pid" 2>/dev/null; then
            names+=("$name")
            pids+=("$pid")
            continue  # its pid file goes once it is gone
        else
            say "$name: cannot signal pid $pid" >&2
            failed=1
            continue
        fi
        rm -f "$file"
    done
    ((${#pids[@]})) || return 0

    local i left ticks=$((TIMEOUT * 10))
    while ((ticks > 0)); do
        left=0
        for pid in "${pids[@]}"; do
            if pid_alive "$pid"; then left=1; break; fi
        done
        ((left)) || break
        sleep 0.1
        ticks=$((ticks - 1))
    done

    for i in "${!pids[@]}"; do
        name="${names[$i]}"
        pid="${pids[$i]}"
        if pid_alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            for _ in {1..20}; do pid_alive "$pid" || break; sleep 0.1; done
            if pid_alive "$pid"; then
                say "$name: pid $pid survived SIGKILL" >&2
                failed=1
                continue
            fi
            say "$name: killed pid $pid (SIGKILL after ${TIMEOUT}s)"
        else
            say "$name: stopped pid $pid"
        fi
        rm -f "$PID_DIR/$name.pid"
    done
}

known=(demo query dlq orchestrator aggregator tracker broker)
others=()
for file in "$PID_DIR"/*.pid; do
    [[ -e "$file" ]] || continue
    name="$(basename "$file" .pid)"
    [[ " ${known[*]} " == *" $name "* ]] || others+=("$name")
done

stop_group demo
stop_group query dlq orchestrator aggregator tracker ${others[@]+"${others[@]}"}
stop_group broker

if ((failed)); then
    say "some processes could not be stopped (see above)" >&2
    exit 1
fi
say "done"
