#!/usr/bin/env bash
# Builds the agent as a static x86_64 Linux binary and the scratch host-container image around it.
#
# usage: host-container-image/build.sh [--reuse] [--no-image]
#   --reuse     keep an existing binary that is newer than every source file (skips cargo)
#   --no-image  stop after the binary (no Docker needed)
#
# Prints `BINARY <path>` and `IMAGE <tag>` lines for scripts, then the sizes.
#
# Static glibc rather than musl: only the x86_64-unknown-linux-gnu target is installed on the
# build machines and no other target can be fetched, so glibc is linked in with crt-static (a
# static-pie). Name lookups still work in the scratch image, through the /etc/hosts and
# /etc/resolv.conf the container runtime mounts: the static glibc needs no NSS modules for them.
set -euo pipefail

reuse=0
image=1
for arg in "$@"; do
    case "$arg" in
        --reuse) reuse=1 ;;
        --no-image) image=0 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $arg" >&2; exit 64 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
triple=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-$root/target}
binary=$target_dir/$triple/release/br-update-agent
context=$target_dir/host-container-image/context

# Any source newer than the binary means it must be rebuilt.
stale() {
    [ ! -x "$binary" ] && return 0
    [ -n "$(find "$root/agent" "$root/Cargo.toml" "$root/Cargo.lock" -newer "$binary" -type f -print -quit)" ]
}

if [ "$reuse" = 1 ] && ! stale; then
    echo "reusing $binary (newer than the sources)" >&2
else
    echo "building the static release binary (this takes minutes)" >&2
    # --target keeps crt-static away from build scripts and proc macros, which must stay dynamic.
    (cd "$root" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release -p br-update-agent --bin br-update-agent --target "$triple")
fi

# Refuse a binary that would need a loader or shared libraries the scratch image does not have.
if ! file -L "$binary" | grep -Eq 'static(ally|-pie) linked'; then
    echo "build.sh: $binary is not statically linked: $(file -L "$binary")" >&2
    exit 1
fi
if ldd "$binary" 2>&1 | grep -q '=>'; then
    echo "build.sh: ldd lists shared libraries for $binary: $(ldd "$binary" 2>&1)" >&2
    exit 1
fi
if ! "$binary" check-config --config /dev/null >/dev/null; then
    echo "build.sh: $binary does not run check-config" >&2
    exit 1
fi
echo "BINARY $binary"
binary_size=$(stat -c %s "$binary")

if [ "$image" = 1 ]; then
    version=$(cd "$root" && cargo pkgid -p br-update-agent | sed 's/.*[#@]//')
    tag="br-update-agent:$version"
    rm -rf "$context"
    mkdir -p "$context"
    cp "$binary" "$context/br-update-agent"
    cp /etc/ssl/certs/ca-certificates.crt "$context/ca-certificates.crt"
    # Without the buildx plugin the classic builder does the job; a scratch image needs nothing more.
    if ! docker buildx version >/dev/null 2>&1; then
        export DOCKER_BUILDKIT=0
    fi
    docker build --quiet --build-arg "VERSION=$version" -t "$tag" -f "$root/host-container-image/Dockerfile" "$context" >&2
    echo "IMAGE $tag"
    # Earlier builds of this image lose their tag to the new one; drop those, and only those.
    old=$(docker images -q -f dangling=true -f "label=org.opencontainers.image.title=br-update-agent")
    if [ -n "$old" ]; then
        docker rmi $old >/dev/null 2>&1 || true
    fi
    image_size=$(docker image inspect -f '{{.Size}}' "$tag")
    printf 'image size:  %s bytes (%s MiB)\n' "$image_size" "$(awk -v b="$image_size" 'BEGIN { printf "%.2f", b / 1048576 }')"
fi
printf 'binary size: %s bytes (%s MiB)\n' "$binary_size" "$(awk -v b="$binary_size" 'BEGIN { printf "%.2f", b / 1048576 }')"
