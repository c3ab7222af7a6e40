#!/usr/bin/env bash
# The image build test: the real Dockerfile, built with podman on a Debian base made here, up to its smoke
# stage (`effbert --help` and the demo DAG to result tables, run inside the image while it builds, since
# containers cannot be started on CI machines). No Docker engine and no access to the index from inside
# the build are needed: Python packages go in as a wheelhouse the build context carries.
#
#   docker/build-test.sh            exit 0 built and smoke-tested, 77 skipped (the reason is printed), else failed
#
# Cached between runs under $EFFBERT_IMAGE_CACHE (default ~/.cache/effbert-image): the Debian root
# filesystem (debootstrap, minbase + python3 from apt) and the wheelhouse; podman keeps its layer cache.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${EFFBERT_IMAGE_CACHE:-$HOME/.cache/effbert-image}
BASE=localhost/effbert-test-base:bookworm   # Debian 12: python3 is 3.11, as pyproject.toml requires
IMAGE=localhost/effbert:build-test
TORCH_SPEC=${EFFBERT_IMAGE_TORCH:-torch==2.13.0}  # the CPU wheel stands in for the CUDA one of the real base image
WHEELS=docker/wheels                        # inside the build context; its *.whl are ignored by git

skip() {
  echo "SKIPPED: $*"
  exit 77
}

command -v podman >/dev/null || skip "podman is not installed (apt-get install podman debootstrap)"
mkdir -p "$CACHE"

debian_mirror() {  # the mirror this machine's apt uses, unless EFFBERT_DEBIAN_MIRROR says otherwise
  if [ -n "${EFFBERT_DEBIAN_MIRROR:-}" ]; then
    echo "$EFFBERT_DEBIAN_MIRROR"
    return
  fi
  awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true
}

# 1. The base image: Debian bookworm (debootstrap minbase) with python3 and venv from apt.
if ! podman image exists "$BASE"; then
  if [ ! -s "$CACHE/bookworm-python.tar" ]; then
    command -v debootstrap >/dev/null || skip "debootstrap is not installed (apt-get install debootstrap)"
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || skip "no Debian mirror found in /etc/apt (set EFFBERT_DEBIAN_MIRROR)"
    rootfs="$CACHE/rootfs"
    rm -rf "$rootfs"
    echo "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" \
      > "$CACHE/debootstrap.log" 2>&1 || { tail -n 20 "$CACHE/debootstrap.log"; exit 1; }
    tar -C "$rootfs" -c . > "$CACHE/bookworm-python.tar.part"
    mv "$CACHE/bookworm-python.tar.part" "$CACHE/bookworm-python.tar"
    rm -rf "$rootfs"
  fi
  podman import "$CACHE/bookworm-python.tar" "$BASE" >/dev/null
fi

# 2. The wheelhouse: CPU torch and every dependency of the package and the build backend, for Python 3.11.
#    Made once per dependency list and torch spec; pip on this machine reaches the index, the build does not.
python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
  skip "the wheelhouse is built with this machine's python3, which must be 3.11 like the Debian base's"
requirements=$(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
stamp="$CACHE/wheels/.requirements-$(echo "$requirements" | sha256sum | cut -c1-16)-${TORCH_SPEC//[^a-zA-Z0-9.]/_}"
if [ ! -f "$stamp" ]; then
  rm -rf "$CACHE/wheels"
  mkdir -p "$CACHE/wheels"
  # this machine's Python is the image's (3.11 on x86_64 Linux): `pip wheel` also turns sdists into wheels
  python3 -m pip wheel --quiet --wheel-dir "$CACHE/wheels" "$TORCH_SPEC" "setuptools>=77" wheel \
    -r <(echo "$requirements")
  touch "$stamp"
fi
rm -f "$WHEELS"/*.whl
cp -l "$CACHE"/wheels/*.whl "$WHEELS"/ 2>/dev/null || cp "$CACHE"/wheels/*.whl "$WHEELS"/
# the project's own wheel is built in the image from the copied source, never taken from here
rm -f "$WHEELS"/effbert-*.whl
trap 'rm -f "$WHEELS"/*.whl' EXIT

# 3. The real Dockerfile on that base, through the smoke stage (rerun every time: SMOKE_RUN). Layers unused for a
#    week go first, so that the layer cache does not grow without end.
podman image prune --force --filter until=168h > /dev/null || true
podman build --isolation=chroot --format docker \
  --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_SPEC="$TORCH_SPEC" --build-arg SMOKE_RUN="$(date +%s)" \
  --target smoke --tag "$IMAGE" --file Dockerfile .
echo "image build test passed: $IMAGE (smoke stage ran effbert --help and the demo DAG)"
