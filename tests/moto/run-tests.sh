#!/usr/bin/env bash
# Proves the patched moto ECS double and its harness routes: installs the venv if needed, then
# runs the pytest suite quietly. Exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

bash "$here/ensure-venv.sh"
cd "$here"
# No cache directory in the source tree; -rfE lists failures and errors at the end.
exec "$repo/target/moto-venv/bin/python" -m pytest -q -rfE -p no:cacheprovider "$@" "$here"
