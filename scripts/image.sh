#!/usr/bin/env bash
# Build the container image (`make image`) and build + smoke-test it (`make image-test`).
#
#   scripts/image.sh build   docker build where a Docker daemon answers, else buildah bud
#   scripts/image.sh test    in a private containers store: a stand-in for the Dockerfile's FROM
#                            image made from Debian packages, the Dockerfile built unmodified on
#                            it, then tests/test_image.py against the result
#
# Settings (environment): IMAGE (tag, default regsync:latest); PIP_CA (a CA bundle pip trusts
# during the build, mounted as the build secret `pip-ca`; default $PIP_CERT, else the system
# bundle); IMAGE_BUILD_ARGS (more build flags, e.g. --build-arg PIP_INDEX_URL=...);
# IMAGE_STORAGE_DRIVER (buildah/podman storage driver, default vfs); IMAGE_STORE (the private
# store of `test`); IMAGE_BASE_CACHE (where `test` keeps the stand-in's root tarball for the day
# it was made: a later run the same day with the same recipe and sources reuses it; empty: make
# it every time).
#
# This machine's limits, and why each flag is here: no overlay mounts (vfs storage), no
# namespaces for build steps (--isolation chroot), OCI image configs drop HEALTHCHECK
# (--format docker), crun refuses the hybrid cgroup set-up (podman --runtime runc), the
# inherited rlimits exceed what runc may set (--ulimit), no systemd to time healthchecks
# (--no-healthcheck: the test runs the image's HEALTHCHECK command itself).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE=${IMAGE:-regsync:latest}
PIP_CA=${PIP_CA:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
DRIVER=${IMAGE_STORAGE_DRIVER:-vfs}
STORE=${IMAGE_STORE:-/var/tmp/regsync-image-test}
CACHE=${IMAGE_BASE_CACHE-/var/tmp/regsync-image-base}
read -r -a EXTRA <<<"${IMAGE_BUILD_ARGS:-}"

# The FROM image: the Dockerfile's default PYTHON_IMAGE (python:MAJOR.MINOR-slim-SUITE).
base_image() { sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile; }

secret_args() {
	if [ -s "$PIP_CA" ]; then echo "--secret id=pip-ca,src=$PIP_CA"; fi
}

build() { # build [containers-storage options...]
	# shellcheck disable=SC2046
	if [ $# -eq 0 ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
		DOCKER_BUILDKIT=1 docker build $(secret_args) "${EXTRA[@]}" -t "$IMAGE" .
	else
		buildah "$@" --storage-driver "$DRIVER" bud --isolation chroot --format docker \
			--layers=false $(secret_args) "${EXTRA[@]}" -t "$IMAGE" .
	fi
}

# Debian sources for the stand-in: this machine's deb822 sources when they carry the suite (the
# same mirror apt uses here), else deb.debian.org.
debian_sources() { # suite
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		if [ -f "$f" ] && grep -Eq "^Suites:.*\b$1\b" "$f" && grep -q "/debian" "$f"; then
			echo "$f"
			return
		fi
	done
	echo "deb http://deb.debian.org/debian $1 main"
	echo "deb http://deb.debian.org/debian $1-updates main"
	echo "deb http://deb.debian.org/debian-security $1-security main"
}

# A stand-in for python:X.Y-slim-SUITE: Debian SUITE's python3 (which must be X.Y), with the
# official image's shape: a slim Debian (no docs, man pages or locales, as debian:SUITE-slim),
# pip and setuptools installed with pip under /usr/local (so pip can uninstall them), no
# EXTERNALLY-MANAGED marker, ca-certificates, netbase and tzdata, LANG and PATH as there.
# Imported under the FROM name so the Dockerfile builds unmodified.
# pip runs from its own wheel (python3-venv ships pip's and setuptools' wheels) to install both.
# shellcheck disable=SC2016
PIP_FROM_WHEELS='w=/usr/share/python-wheels; p=$(ls $w/pip-*.whl); python3 "$p/pip" install --quiet --no-index --no-cache-dir --disable-pip-version-check --root-user-action=ignore "$p" $w/setuptools-*.whl'

standin() { # containers-storage options...
	local base version suite tar mirror
	base=$(base_image)
	[[ $base =~ ^python:([0-9]+\.[0-9]+)-slim-([a-z]+)$ ]] ||
		{ echo "image.sh: cannot make a stand-in for FROM $base" >&2; return 1; }
	version=${BASH_REMATCH[1]} suite=${BASH_REMATCH[2]}
	mapfile -t mirror < <(debian_sources "$suite")
	tar=$(standin_tar "$base" "${mirror[@]}")
	if [ -s "$tar" ]; then
		echo "image.sh: stand-in for $base: today's, from $tar" >&2
	else
		echo "image.sh: stand-in for $base from Debian $suite (${mirror[0]})" >&2
		debootstrap_standin "$version" "$suite" "$tar.part" "${mirror[@]}"
		mv "$tar.part" "$tar"
	fi
	podman "$@" import \
		--change 'ENV=PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV=LANG=C.UTF-8' --change 'CMD=["python3"]' \
		"$tar" "docker.io/library/$base" >/dev/null
	if [ -z "$CACHE" ]; then rm -f "$tar"; fi
}

# Where the stand-in's tarball goes: the cache, named by a hash of its recipe (these functions),
# its Debian sources and today's date (so security updates arrive daily), else the store.
standin_tar() { # base mirror...
	local key f
	if [ -z "$CACHE" ]; then
		echo "$STORE/standin.tar"
		return
	fi
	key=$({
		declare -f standin debootstrap_standin
		echo "$PIP_FROM_WHEELS $* $(date -u +%F)"
		for f in "${@:2}"; do if [ -f "$f" ]; then cat "$f"; fi; done
	} | sha256sum | cut -c1-16)
	mkdir -p "$CACHE"
	find "$CACHE" -name 'standin-*.tar*' ! -name "standin-$key.tar" -delete
	echo "$CACHE/standin-$key.tar"
}

debootstrap_standin() { # version suite tar mirror...
	local version=$1 suite=$2 tar=$3
	shift 3
	mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
		--dpkgopt=force-unsafe-io --aptopt='Acquire::Languages "none"' \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
		--include=python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata \
		--customize-hook="chroot \"\$1\" python3 -c 'import sys; assert \"%d.%d\" % sys.version_info[:2] == \"$version\", sys.version'" \
		--customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
		--customize-hook="chroot \"\$1\" sh -c '$PIP_FROM_WHEELS'" \
		"$suite" "$tar" "$@" </dev/null
}

smoke_test() {
	local opts=(--root "$STORE/root" --runroot "$STORE/run" --storage-driver "$DRIVER")
	local start=$SECONDS log="$STORE/build.log"
	rm -rf "$STORE" && mkdir -p "$STORE"
	standin "${opts[@]}"
	echo "image.sh: stand-in ready after $((SECONDS - start)) s; building $IMAGE" >&2
	build "${opts[@]}" 2>&1 | tee "$log"
	echo "image.sh: image built after $((SECONDS - start)) s; smoke test" >&2
	REGSYNC_IMAGE="$IMAGE" REGSYNC_IMAGE_STORE="$STORE" REGSYNC_IMAGE_BUILD_LOG="$log" \
		REGSYNC_IMAGE_STORAGE_DRIVER="$DRIVER" PIP_CA="$PIP_CA" \
		.venv/bin/pytest -n 0 -p no:cacheprovider -q tests/test_image.py
	echo "image.sh: image-test passed in $((SECONDS - start)) s" >&2
	rm -rf "$STORE"
}

case "${1:-}" in
build) build ;;
test) smoke_test ;;
*)
	echo "usage: scripts/image.sh build|test" >&2
	exit 2
	;;
esac
