#!/usr/bin/env bash
# sam/image.sh: a Docker engine, and the Lambda python3.11 image that `sam local` runs the
# functions in, on a machine with no container registry. Prints the image (REPOSITORY:TAG)
# on stdout, and its progress on stderr. Used by sam/sam_local.py (make sam-local).
#
#   engine : the OS's docker.io (installed if dockerd is missing), started here with
#            --iptables=false --ip-masq=false when no engine answers: containers then reach
#            their bridge and the host's address on it, nothing further. Its pid goes to
#            $WORK/dockerd.pid: whoever started this script stops it (sam_local.py does).
#   image  : the official public.ecr.aws/lambda/python:3.11-<arch> when it can be pulled;
#            else one built offline: a debootstrap root filesystem of Debian bookworm (whose
#            python3 is 3.11) + the Lambda runtime interface client (awslambdaric) from PyPI,
#            started by /var/runtime/bootstrap, loaded with `docker load` of a hand-made
#            archive (`docker import` stamps the host's architecture whatever --platform
#            says). Its repository name carries a hash of this recipe: built once per
#            machine and recipe, reused while it exists.
#
# Env: WORK (scratch and state; default /var/tmp/tokenvend-sam), PYTHON (a python3 with pip;
# default python3), LAMBDA_ARCH (x86_64|arm64; default the host's), SAM_LOCAL_IMAGE
# (auto: official if it pulls, else offline | official | offline).
# Needs root for apt-get, dockerd and debootstrap, unless those are already there.
set -euo pipefail

WORK=${WORK:-/var/tmp/tokenvend-sam}
PYTHON=${PYTHON:-python3}
SAM_LOCAL_IMAGE=${SAM_LOCAL_IMAGE:-auto}
case "$(uname -m)" in
  x86_64) HOST_ARCH=x86_64 ;;
  aarch64 | arm64) HOST_ARCH=arm64 ;;
  *) echo "image.sh: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
LAMBDA_ARCH=${LAMBDA_ARCH:-$HOST_ARCH}
case "$LAMBDA_ARCH" in
  x86_64) DEB_ARCH=amd64 PY_PLATFORM=manylinux2014_x86_64 ;;
  arm64) DEB_ARCH=arm64 PY_PLATFORM=manylinux2014_aarch64 ;;
  *) echo "image.sh: LAMBDA_ARCH must be x86_64 or arm64" >&2; exit 1 ;;
esac
if [ "$LAMBDA_ARCH" != "$HOST_ARCH" ]; then
  echo "image.sh: a $LAMBDA_ARCH image on a $HOST_ARCH host needs qemu; build for $HOST_ARCH" >&2
  exit 1
fi
SUITE=bookworm                                 # the Debian release whose python3 is 3.11
RIC_PINS="awslambdaric==4.2.2 boto3==1.44.8"   # boto3: as the managed python3.11 runtime has it
OFFICIAL=public.ecr.aws/lambda/python:3.11-$LAMBDA_ARCH
# The Debian mirror apt already uses: this script names no host of its own.
MIRROR=${MIRROR:-$(awk '$1=="URIs:"{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}

export DEBIAN_FRONTEND=noninteractive
unset DOCKER_CONTEXT || true
mkdir -p "$WORK"
say() { echo "image.sh: $*" >&2; }
run_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# ------------------------------------------------------------------------------ the engine
install_packages() {
  local pkgs=()
  command -v dockerd >/dev/null || pkgs+=(docker.io)
  command -v docker >/dev/null || pkgs+=(docker.io)
  if [ "$SAM_LOCAL_IMAGE" != official ]; then
    command -v debootstrap >/dev/null || pkgs+=(debootstrap)
  fi
  [ ${#pkgs[@]} -eq 0 ] && return 0
  say "installing ${pkgs[*]} from the OS's packages"
  run_as_root apt-get update -qq
  run_as_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$WORK/apt.log" 2>&1 \
    || { cat "$WORK/apt.log" >&2; return 1; }
}

start_engine() {
  if docker info >/dev/null 2>&1; then return 0; fi
  say "starting dockerd (--iptables=false --ip-masq=false)"
  # setsid: its own session, so that a Ctrl-C of the caller does not reach it; the caller
  # stops it by the pid written here.
  if [ "$(id -u)" = 0 ]; then
    setsid dockerd --iptables=false --ip-masq=false >"$WORK/dockerd.log" 2>&1 </dev/null &
  else
    sudo -n setsid dockerd --iptables=false --ip-masq=false >"$WORK/dockerd.log" 2>&1 </dev/null &
  fi
  echo $! >"$WORK/dockerd.pid"
  local i
  for i in $(seq 1 240); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  say "dockerd did not answer in 60 s; see $WORK/dockerd.log"
  return 1
}

# ------------------------------------------------------------------------------ the image
BOOTSTRAP='#!/bin/sh
# Lambda runtime bootstrap of the offline python3.11 image. SAM CLI'\''s aws-lambda-rie runs
# the first of /var/task/bootstrap, /opt/bootstrap, /var/runtime/bootstrap, with _HANDLER
# and AWS_LAMBDA_RUNTIME_API set.
export AWS_EXECUTION_ENV="${AWS_EXECUTION_ENV:-AWS_Lambda_python3.11}"
export PYTHONPATH="/var/task:/opt/python/lib/python3.11/site-packages:/opt/python:/var/runtime${PYTHONPATH:+:$PYTHONPATH}"
cd "${LAMBDA_TASK_ROOT:-/var/task}"
handler="${_HANDLER:-$AWS_LAMBDA_FUNCTION_HANDLER}"
if [ -n "${AWS_LAMBDA_EXEC_WRAPPER:-}" ]; then
  exec "$AWS_LAMBDA_EXEC_WRAPPER" /usr/bin/python3 -m awslambdaric "$handler"
fi
exec /usr/bin/python3 -m awslambdaric "$handler"'
IMAGE_ENV=(  # as the managed image sets them (paths adapted to Debian's python)
  LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime LANG=C.UTF-8 TZ=:/etc/localtime
  PATH=/usr/local/bin:/usr/bin:/bin:/opt/bin
  LD_LIBRARY_PATH=/var/runtime/lib:/var/task:/var/task/lib:/opt/lib
)

build_rootfs() {  # $1 = scratch dir; the root filesystem goes to $1/rootfs
  local d=$1 pipargs=(--only-binary=:all: --platform "$PY_PLATFORM" --python-version 3.11
    --implementation cp --abi cp311)
  rm -rf "$d"
  mkdir -p "$d"
  run_as_root debootstrap --arch="$DEB_ARCH" --variant=minbase --include=python3 \
    "$SUITE" "$d/rootfs" "$MIRROR" >"$d/debootstrap.log" 2>&1 \
    || { tail -20 "$d/debootstrap.log" >&2; return 1; }
  # awslambdaric has a C extension: the manylinux wheel for the image's arch and CPython 3.11.
  # (grep: a pip.conf may name local indexes that do not exist; pip warns of each.)
  "$PYTHON" -m pip download -q --disable-pip-version-check "${pipargs[@]}" -d "$d/wheels" \
    $RIC_PINS 2> >(grep -v '^WARNING: Location' >&2)
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --find-links "$d/wheels" \
    --no-compile "${pipargs[@]}" --target "$d/rootfs/var/runtime" $RIC_PINS
  printf '%s\n' "$BOOTSTRAP" >"$d/rootfs/var/runtime/bootstrap"
  chmod 0755 "$d/rootfs/var/runtime/bootstrap"
  mkdir -p "$d/rootfs/var/task" "$d/rootfs/opt"
  # .pyc compiled by the image's own python
  run_as_root chroot "$d/rootfs" /usr/bin/python3 -m compileall -q /var/runtime >/dev/null
  rm -rf "$d/rootfs"/var/cache/apt/archives/*.deb "$d/rootfs"/var/lib/apt/lists/* \
    "$d/rootfs"/usr/share/{doc,man,info,locale}
}

load_rootfs() {  # $1 = root filesystem: loaded as the one-layer image $IMAGE, linux/$DEB_ARCH
  local d
  d=$(mktemp -d "$WORK/load.XXXXXX")
  tar --numeric-owner -C "$1" -cf "$d/layer.tar" .
  "$PYTHON" - "$d" "$DEB_ARCH" "$IMAGE" "${IMAGE_ENV[@]}" <<'PY'
import hashlib, json, sys
d, arch, ref, env = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
digest = hashlib.sha256()
with open(f"{d}/layer.tar", "rb") as layer:
    for block in iter(lambda: layer.read(1 << 20), b""):
        digest.update(block)
config = {
    "architecture": arch, "os": "linux", "created": "2000-01-01T00:00:00Z",
    "config": {"Env": env, "WorkingDir": "/var/task", "Entrypoint": ["/var/runtime/bootstrap"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + digest.hexdigest()]},
    "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "sam/image.sh"}],
}
raw = json.dumps(config).encode()
name = hashlib.sha256(raw).hexdigest() + ".json"
open(f"{d}/{name}", "wb").write(raw)
manifest = [{"Config": name, "RepoTags": [ref], "Layers": ["layer.tar"]}]
json.dump(manifest, open(f"{d}/manifest.json", "w"))
open(f"{d}/config-name", "w").write(name)
PY
  tar -C "$d" -c manifest.json "$(cat "$d/config-name")" layer.tar | docker load >/dev/null
  rm -rf "$d"
  [ "$(docker image inspect -f '{{.Architecture}}' "$IMAGE")" = "$DEB_ARCH" ]
}

recipe_hash() {  # all that decides the image's content (not the mirror)
  {
    declare -f build_rootfs load_rootfs
    printf '%s\n' "$BOOTSTRAP" "$RIC_PINS" "$SUITE" "$DEB_ARCH" "${IMAGE_ENV[@]}"
  } | sha256sum | cut -c1-12
}
# The hash is in the repository's name, not the tag: SAM CLI names the image it derives
# after the repository, and drops the tag.
REPO_PREFIX=tokenvend-sam/lambda-python3.11-$LAMBDA_ARCH
IMAGE=$REPO_PREFIX-$(recipe_hash):latest

offline_image() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "reusing $IMAGE"
    return 0
  fi
  say "building $IMAGE: debootstrap $SUITE/$DEB_ARCH + awslambdaric (about a minute)"
  local d=$WORK/image-build
  build_rootfs "$d"
  load_rootfs "$d/rootfs"
  run_as_root rm -rf "$d"
  # Images of older recipes, and the dangling images SAM CLI derived from them.
  docker images --format '{{.Repository}}:{{.Tag}}' | grep "^$REPO_PREFIX-" | grep -v "^$IMAGE\$" \
    | xargs -r docker rmi -f >/dev/null 2>&1 || true
  docker image prune -f >/dev/null 2>&1 || true
}

official_image() {  # true if the official image is here or could be pulled
  docker image inspect "$OFFICIAL" >/dev/null 2>&1 && return 0
  timeout 300 docker pull -q "$OFFICIAL" >/dev/null 2>&1
}

main() {
  install_packages
  start_engine
  case "$SAM_LOCAL_IMAGE" in
    official)
      official_image || { say "cannot pull $OFFICIAL"; return 1; }
      echo "$OFFICIAL" ;;
    offline)
      offline_image
      echo "$IMAGE" ;;
    auto)
      if official_image; then
        say "using the official $OFFICIAL"
        echo "$OFFICIAL"
      else
        say "no registry: $OFFICIAL cannot be pulled, the offline image is used"
        offline_image
        echo "$IMAGE"
      fi ;;
    *) say "SAM_LOCAL_IMAGE must be auto, official or offline"; return 1 ;;
  esac
}

main "$@"
