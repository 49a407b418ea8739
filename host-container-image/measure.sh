#!/usr/bin/env bash
# Measures the agent's footprint against its budgets and prints the figures (not a pass/fail test):
#   image size, binary size (target: image under 15 MB),
#   resident memory idle and during an update (target: idle VmRSS under 10 MiB),
#   CPU time per idle hour.
#
# usage: host-container-image/measure.sh [--idle-seconds N] [--no-image]
#
# The static release binary runs directly on this machine (the same binary the image holds)
# against the fake Bottlerocket API server on a temporary socket, standalone (no ECS). Idle means
# running as a daemon between checks (check interval 7 days); CPU is utime+stime from
# /proc/PID/stat over the idle period, scaled to one hour.
set -euo pipefail

idle_seconds=120
build_args=(--reuse)
while [ $# -gt 0 ]; do
    case "$1" in
        --idle-seconds) idle_seconds=${2:?--idle-seconds needs a number}; shift 2 ;;
        --no-image) build_args+=(--no-image); shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "measure.sh: unknown argument $1" >&2; exit 64 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
if ! docker info >/dev/null 2>&1; then
    echo "measure.sh: no Docker engine answers; measuring the binary only" >&2
    build_args+=(--no-image)
fi

build_out=$("$root/host-container-image/build.sh" "${build_args[@]}")
agent=$(sed -n 's/^BINARY //p' <<<"$build_out")
(cd "$root" && cargo build --quiet -p fake-bottlerocket --bin fake-bottlerocket)
fake=$target_dir/debug/fake-bottlerocket

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Starts the fake host on $work/$1.sock with the remaining arguments; waits for READY.
start_fake() {
    local name=$1; shift
    local ready=$work/$name.ready
    "$fake" --socket "$work/$name.sock" --version 1.0.0 "$@" >"$ready" 2>"$work/$name.log" &
    pids+=($!)
    for _ in $(seq 1 100); do
        grep -q '^READY ' "$ready" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "measure.sh: the fake host did not start: $(cat "$work/$name.log")" >&2
    exit 1
}

# Writes an agent config for the socket $1 and state dir $2; extra top-level lines from $3.
write_config() {
    mkdir -p "$2"
    cat >"$2/config.toml" <<CONFIG
api-socket = "$1"
state-dir = "$2"
check-jitter = "0s"
$3
[commands]
poll-interval = "200ms"
busy-backoff-min = "200ms"
busy-backoff-max = "1s"

[cluster]
enabled = false
CONFIG
}

# Prints "VmRSS VmHWM" in KiB for a pid.
memory() {
    awk '/^VmRSS:/ { rss = $2 } /^VmHWM:/ { hwm = $2 } END { print rss, hwm }' "/proc/$1/status"
}

# Prints utime+stime in clock ticks for a pid (fields 14 and 15 after the command name).
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

echo "== sizes"
grep -E '^(image|binary) size' <<<"$build_out"

echo "== idle (daemon between checks, ${idle_seconds}s)"
start_fake idle
write_config "$work/idle.sock" "$work/idle-state" 'check-interval = "7d"'
"$agent" run --config "$work/idle-state/config.toml" 2>"$work/idle-agent.log" &
idle_pid=$!
pids+=($idle_pid)
sleep 5
read -r rss_start hwm_start < <(memory "$idle_pid")
ticks_start=$(cpu_ticks "$idle_pid")
sleep "$idle_seconds"
read -r rss_end hwm_end < <(memory "$idle_pid")
ticks_end=$(cpu_ticks "$idle_pid")
kill -TERM "$idle_pid"
hz=$(getconf CLK_TCK)
echo "idle VmRSS: ${rss_start} KiB after 5s, ${rss_end} KiB after ${idle_seconds}s more (VmHWM ${hwm_end} KiB)"
awk -v t=$((ticks_end - ticks_start)) -v hz="$hz" -v s="$idle_seconds" 'BEGIN {
    printf "idle CPU: %d ticks of 1/%ds in %ds = %.3f s CPU per idle hour", t, hz, s, t / hz * 3600 / s
    if (t == 0) printf " (below one tick: under %.3f s per hour)", 3600 / hz / s
    printf "\n"
}'

echo "== update (--once: refresh, prepare 5s, activate, reboot request)"
start_fake update --publish 1.1.0 --prepare-time 5s
write_config "$work/update.sock" "$work/update-state" ''
"$agent" run --once --config "$work/update-state/config.toml" 2>"$work/update-agent.log" &
update_pid=$!
pids+=($update_pid)
peak_rss=0
last_hwm=0
while kill -0 "$update_pid" 2>/dev/null; do
    if read -r rss hwm < <(memory "$update_pid" 2>/dev/null); then
        [ "${rss:-0}" -gt "$peak_rss" ] && peak_rss=$rss
        [ -n "${hwm:-}" ] && last_hwm=$hwm
    fi
    sleep 0.1
done
wait "$update_pid" && status=0 || status=$?
if ! grep -q 'outcome="\?rebooting' "$work/update-agent.log"; then
    echo "measure.sh: the update run did not reach the reboot request (exit $status):" >&2
    tail -20 "$work/update-agent.log" >&2
    exit 1
fi
echo "update VmRSS: peak sampled ${peak_rss} KiB, VmHWM ${last_hwm} KiB"

echo "== budgets"
image_bytes=$(sed -n 's/^image size: *\([0-9]*\) bytes.*/\1/p' <<<"$build_out")
if [ -n "$image_bytes" ]; then
    [ "$image_bytes" -lt 15000000 ] && verdict=within || verdict=OVER
    echo "image ${image_bytes} bytes vs 15 MB: $verdict"
fi
[ "$rss_end" -lt 10240 ] && verdict=within || verdict=OVER
echo "idle VmRSS ${rss_end} KiB vs 10 MiB: $verdict"
