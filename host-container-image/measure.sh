#!/usr/bin/env bash
# Measures the agent's footprint against its budgets and prints the figures (not a pass/fail test):
#   image size, binary size (target: image under 15 MB),
#   resident memory idle and during an update (target: idle VmRSS under 10 MiB),
#   CPU time per idle hour.
#
# usage: host-container-image/measure.sh [--idle-seconds N] [--no-image]
#
# The static release binary runs directly on this machine (the same binary the image holds)
# against the fake Bottlerocket API server on a temporary socket: once standalone, and once
# coordinating through ECS, where ECS is the patched moto server of tests/moto behind a local TLS
# front (skipped when its Python venv cannot be made). Idle means running as a daemon between checks (check interval
# 7 days); CPU is utime+stime from /proc/PID/stat over the idle period, scaled to one hour.
# "During an update" samples VmRSS every 0.1 s through refresh, prepare, activate (and the lease
# and drain with ECS) up to the reboot request.
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

# Writes an agent config for the socket $1 and state dir $2: top-level lines $3, [cluster] body $4.
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
$4
CONFIG
}

# Prints "VmRSS VmHWM RssAnon" in KiB for a pid (RssAnon: the part that is not file pages).
memory() {
    awk '/^VmRSS:/ { rss = $2 } /^VmHWM:/ { hwm = $2 } /^RssAnon:/ { anon = $2 } END { print rss, hwm, anon }' "/proc/$1/status"
}

# Prints utime+stime in clock ticks for a pid (fields 14 and 15 after the command name).
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# One host's life around an update. $1: label, $2: [cluster] body; the agent inherits the environment.
#  1. `run --once` on version 1.0.0 with 1.1.0 published (prepare takes 5s): refresh, prepare,
#     activate (with ECS: lease, drain) up to the reboot request, sampling VmRSS every 0.1s;
#  2. the fake host boots onto 1.1.0;
#  3. the agent starts again as a daemon, finishes the update (with ECS: re-activates the instance,
#     releases the lease) and then idles until its next check, 7 days away: memory and CPU are
#     read 5s after it starts waiting and again after the idle period.
measure_host() {
    local label=$1 cluster=$2
    local sock=$work/$label.sock state=$work/$label
    start_fake "$label" --publish 1.1.0 --prepare-time 5s --boot-delay 1s
    write_config "$sock" "$state" 'check-interval = "7d"' "$cluster"

    "$agent" run --once --config "$state/config.toml" 2>"$state/update.log" &
    local pid=$! peak=0 hwm_seen=0 rss hwm status
    pids+=($pid)
    while kill -0 "$pid" 2>/dev/null; do
        if read -r rss hwm _ < <(memory "$pid" 2>/dev/null); then
            [ "${rss:-0}" -gt "$peak" ] && peak=$rss
            [ -n "${hwm:-}" ] && hwm_seen=$hwm
        fi
        sleep 0.1
    done
    wait "$pid" && status=0 || status=$?
    if ! grep -q 'outcome="\?rebooting' "$state/update.log"; then
        echo "measure.sh: the $label update did not reach the reboot request (exit $status):" >&2
        tail -20 "$state/update.log" >&2
        exit 1
    fi
    echo "update VmRSS ($label): peak sampled ${peak} KiB, VmHWM ${hwm_seen} KiB"

    for _ in $(seq 1 100); do
        curl -sf --unix-socket "$sock" http://localhost/fake/state | grep -q '"boots":1' && break
        sleep 0.1
    done

    "$agent" run --config "$state/config.toml" 2>"$state/idle.log" &
    pid=$!
    pids+=($pid)
    # Idle from its first "next check" on, 5s later to let any startup work settle.
    for _ in $(seq 1 300); do
        grep -q 'next check' "$state/idle.log" && break
        sleep 0.1
    done
    sleep 5
    if ! grep -q 'booted into the new version' "$state/idle.log"; then
        echo "measure.sh: the $label agent did not finish the update after the reboot:" >&2
        tail -20 "$state/idle.log" >&2
        exit 1
    fi
    local rss_start hwm_start anon_start rss_end hwm_end anon_end ticks_start ticks_end
    read -r rss_start hwm_start anon_start < <(memory "$pid")
    ticks_start=$(cpu_ticks "$pid")
    sleep "$idle_seconds"
    read -r rss_end hwm_end anon_end < <(memory "$pid")
    ticks_end=$(cpu_ticks "$pid")
    kill -TERM "$pid"
    echo "idle VmRSS ($label, after finishing the update): ${rss_start} KiB, ${rss_end} KiB ${idle_seconds}s later (RssAnon ${anon_end} KiB, VmHWM ${hwm_end} KiB)"
    awk -v t=$((ticks_end - ticks_start)) -v hz="$(getconf CLK_TCK)" -v s="$idle_seconds" -v l="$label" 'BEGIN {
        printf "idle CPU (%s): %d ticks of 1/%ds in %ds = %.3f s CPU per idle hour", l, t, hz, s, t / hz * 3600 / s
        if (t == 0) printf " (below one tick: under %.3f s per hour)", 3600 / hz / s
        printf "\n"
    }'
    idle_rss[$label]=$rss_end
}

# Starts the moto ECS server with one registered instance; sets cluster_body, or returns 1.
start_moto() {
    bash "$root/tests/moto/ensure-venv.sh" >&2 || return 1
    "$root/target/moto-venv/bin/python" "$root/tests/moto/server.py" --port 0 --ignore-stdin \
        >"$work/moto.port" 2>"$work/moto.log" &
    pids+=($!)
    local port=""
    for _ in $(seq 1 300); do
        port=$(sed -n 's/^PORT //p' "$work/moto.port")
        [ -n "$port" ] && break
        sleep 0.2
    done
    [ -n "$port" ] || return 1
    local seeded
    seeded=$(curl -sf -X POST -H 'content-type: application/json' \
        -d '{"cluster": "measure", "instances": 1, "tags": {}}' "http://127.0.0.1:$port/_harness/seed") || return 1
    local cluster_arn instance_arn
    cluster_arn=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster_arn"])' <<<"$seeded")
    instance_arn=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["instances"][0])' <<<"$seeded")
    # ECS is reached over HTTPS, as in production: a TLS front for moto with a certificate made
    # here, trusted through the full system bundle plus that certificate (so the agent loads a
    # certificate store of the real size).
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=measure-ca \
        -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null || return 1
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
        -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null || return 1
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$work/tls.ext"
    openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
        -days 1 -extfile "$work/tls.ext" -out "$work/tls.crt" 2>/dev/null || return 1
    cat /etc/ssl/certs/ca-certificates.crt "$work/ca.crt" >"$work/bundle.crt"
    python3 - "$port" "$work/tls.crt" "$work/tls.key" >"$work/tls.port" 2>"$work/tls.log" <<'PROXY' &
import socket, ssl, sys, threading
backend, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
listener = socket.create_server(("127.0.0.1", 0))
print("PORT", listener.getsockname()[1], flush=True)
def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(raw):
    try:
        front = ctx.wrap_socket(raw, server_side=True)
    except (OSError, ssl.SSLError):
        raw.close()
        return
    back = socket.create_connection(("127.0.0.1", backend))
    threading.Thread(target=pipe, args=(back, front), daemon=True).start()
    pipe(front, back)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
PROXY
    pids+=($!)
    local tls_port=""
    for _ in $(seq 1 100); do
        tls_port=$(sed -n 's/^PORT //p' "$work/tls.port")
        [ -n "$tls_port" ] && break
        sleep 0.1
    done
    [ -n "$tls_port" ] || return 1
    export AWS_ENDPOINT_URL_ECS="https://localhost:$tls_port" SSL_CERT_FILE="$work/bundle.crt"
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
    cluster_body="cluster = \"$cluster_arn\"
instance-arn = \"$instance_arn\"
settle-time = \"1s\"
lease-ttl = \"2m\"
lease-backoff-min = \"1s\"
lease-backoff-max = \"5s\"
drain-poll-interval = \"1s\""
}

declare -A idle_rss
echo "== sizes"
grep -E '^(image|binary) size' <<<"$build_out"

echo "== standalone (no ECS): one update, then ${idle_seconds}s idle"
measure_host standalone 'enabled = false'

echo "== coordinating through ECS (moto behind TLS): one update, then ${idle_seconds}s idle"
if start_moto; then
    measure_host ecs "$cluster_body"
else
    echo "moto ECS server unavailable: ECS figures not measured"
    tail -5 "$work/moto.log" 2>/dev/null || true
fi

echo "== budgets"
image_bytes=$(sed -n 's/^image size: *\([0-9]*\) bytes.*/\1/p' <<<"$build_out")
if [ -n "$image_bytes" ]; then
    [ "$image_bytes" -lt 15000000 ] && verdict=within || verdict=OVER
    echo "image ${image_bytes} bytes vs 15 MB: $verdict"
fi
for label in "${!idle_rss[@]}"; do
    [ "${idle_rss[$label]}" -lt 10240 ] && verdict=within || verdict=OVER
    echo "idle VmRSS ($label) ${idle_rss[$label]} KiB vs 10 MiB: $verdict"
done
