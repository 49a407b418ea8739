#!/usr/bin/env bash
# Creates, once, the Python venv that the moto ECS test double runs in, at $REPO/target/moto-venv.
# Reinstalls only when requirements.txt changed (a stamp file keeps its hash). Quiet unless it fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/target/moto-venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

die() {
    echo "ensure-venv: $*" >&2
    exit 1
}

command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
[[ -f "$req" ]] || die "missing $req"
want="$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$req")" \
    || die "cannot hash $req"

up_to_date() {
    [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        && "$venv/bin/python" -c '' >/dev/null 2>&1
}

up_to_date && exit 0

mkdir -p "$repo/target" || die "cannot create $repo/target"
# Several test processes may call this at once: let one install while the others wait for it.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$repo/target/moto-venv.lock" || die "cannot open the lock file in $repo/target"
    flock 9 || die "cannot lock $repo/target/moto-venv.lock"
    up_to_date && exit 0
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# A venv whose interpreter no longer runs (Python upgraded underneath it) cannot be repaired in place.
if [[ -e "$venv" ]] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    rm -rf "$venv" || die "cannot remove the broken venv at $venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv" >"$log" 2>&1 || {
        cat "$log" >&2
        die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
    }
fi

rm -f "$stamp"
PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$venv/bin/python" -m pip install --quiet -r "$req" >"$log" 2>&1 || {
        cat "$log" >&2
        die "pip install -r $req failed (is PyPI reachable?)"
    }
printf '%s\n' "$want" >"$stamp" || die "cannot write $stamp"
