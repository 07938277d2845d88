# shellcheck shell=bash
# The pid files of scripts/start.sh and scripts/stop.sh: sourced by both, never run.
#
# Needs ROOT (the repository root). Sets RUN_DIR (KAFKA_SAGA_RUN_DIR, default: ROOT) and
# PID_DIR ($RUN_DIR/pids), where each process start.sh starts has NAME.pid holding its PID.

RUN_DIR="${KAFKA_SAGA_RUN_DIR:-$ROOT}"
PID_DIR="$RUN_DIR/pids"

# write_pid NAME PID
write_pid() {
    echo "$2" >"$PID_DIR/$1.pid"
}

# read_pid FILE: the PID a pid file holds (digits only; empty when there are none)
read_pid() {
    tr -dc '0-9' <"$1"
}

# pid_alive PID: the process runs (a zombie counts as gone)
pid_alive() {
    local pid="$1" state
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/stat" ]]; then
        state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
        [[ "$state" != "Z" ]] || return 1
    fi
    return 0
}

# is_ours PID: the PID still runs kafka_saga (guards against a PID reused since it was written)
is_ours() {
    local pid="$1" cmdline=""
    if [[ -r "/proc/$pid/cmdline" ]]; then
        cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    elif command -v ps >/dev/null 2>&1; then
        cmdline="$(ps -p "$pid" -o command= 2>/dev/null || true)"
    else
        return 0  # nothing to check with: trust the pid file
    fi
    [[ "$cmdline" == *kafka_saga* ]]
}
