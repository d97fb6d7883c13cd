#!/usr/bin/env bash
# Builds a minimal Debian bookworm base image locally, without any container registry:
# debootstrap --variant=minbase + python3 (3.11) + python3-venv + ca-certificates, trimmed,
# then `podman import`ed as localhost/tgi-collector-base:bookworm (override with $BASE_TAG).
#
# For machines that reach a Debian mirror but no registry (Docker Hub etc.). Then:
#   podman build --isolation chroot --format docker \
#     --build-arg BASE_IMAGE=localhost/tgi-collector-base:bookworm -t tgi-collector:dev .
#
# Needs root, debootstrap and podman. Idempotent: does nothing when the image already exists,
# unless --force. Environment: MIRROR (default http://deb.debian.org/debian), SUITE (bookworm),
# BASE_TAG, WORKDIR (where the rootfs is assembled; removed afterwards).
set -euo pipefail

usage() { echo "usage: $0 [--force]   (env: MIRROR, SUITE, BASE_TAG, WORKDIR)"; }
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
tag=${BASE_TAG:-localhost/tgi-collector-base:${suite}}
# python3 is 3.11 in bookworm (the project needs >=3.11); python3-venv brings ensurepip, since
# Debian's python3 is "externally managed" and pip may only install into a venv.
packages=python3,python3-venv,ca-certificates

log() { printf '[build_base_image] %s\n' "$*"; }
die() { printf '[build_base_image] error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap creates device nodes and chowns files)"
for tool in debootstrap podman tar; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y debootstrap podman)"
done

if podman image exists "$tag" && [[ $force -eq 0 ]]; then
  log "$tag already exists ($(podman image inspect --format '{{.Size}}' "$tag") bytes); --force rebuilds it"
  exit 0
fi

workdir=${WORKDIR:-$(mktemp -d /var/tmp/tgi-collector-base.XXXXXX)}
rootfs=$workdir/rootfs
cleanup() { rm -rf --one-file-system "$workdir"; }
trap cleanup EXIT
mkdir -p "$rootfs"

log "debootstrap --variant=minbase $suite from $mirror (+ $packages) into $rootfs"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
  >"$workdir/debootstrap.log" 2>&1 || { tail -n 30 "$workdir/debootstrap.log" >&2; die "debootstrap failed"; }

log "trimming: apt lists and caches, docs, man pages, locales, host files"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
  "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian "$rootfs"/usr/share/linda
# Like the official slim images: packages installed later do not bring docs back either.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
# The container runtime provides these; the host's copies must not end up in the image.
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"
rm -f "$rootfs/etc/machine-id" && : >"$rootfs/etc/machine-id"

python_version=$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
chroot "$rootfs" python3 -c 'import ensurepip, venv, ssl' || die "python3 in the rootfs lacks venv/ensurepip/ssl"
log "rootfs: python3 $python_version, $(du -sh --apparent-size "$rootfs" | cut -f1)"

log "podman import as $tag"
podman image rm --force "$tag" >/dev/null 2>&1 || true
tar --numeric-owner --xattrs -C "$rootfs" -c . | podman import --quiet \
  --change 'CMD ["/bin/bash"]' \
  --change 'ENV LANG=C.UTF-8' \
  --message "debootstrap --variant=minbase $suite + $packages" \
  - "$tag" >/dev/null
log "done: $tag ($(podman image inspect --format '{{.Size}}' "$tag") bytes)"
