#!/usr/bin/env bash
# Builds the real Dockerfile (RUNTIME_IMAGE=scratch, Go from this machine's
# toolchain) with podman and runs the image against a simulated NapCat and
# two simulated NoneBots on 127.0.0.1 (deploy/imagetest). Checks: events reach
# both targets, an API call is answered, `obmux healthcheck` in the container
# exits 0, the process runs as non-root, and `podman stop` makes obmux send
# lifecycle disable and close 1001 to both targets and exit 0.
#
# Needs only Debian's podman, buildah, runc and busybox-static (installed here
# when missing) and Go at /usr/local/go or on PATH; no Docker engine, no
# registry. Leaves no container and no background process behind; the images
# are kept (localhost/obmux-go-builder:<go version>, localhost/obmux:imagetest;
# the previous obmux image is removed when a new one replaces it) and so are
# the build's Go module and build caches (RUN --mount=type=cache), so that a
# second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
t0=$(date +%s)
elapsed() { echo "$(($(date +%s) - t0))s"; }
say() { printf 'test-image [%s]: %s\n' "$(elapsed)" "$*"; }
die() { printf 'test-image: FAIL: %s\n' "$*" >&2; exit 1; }

# --- packages -----------------------------------------------------------
need=()
for p in podman buildah runc busybox-static; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then need+=("$p"); fi
done
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v go >/dev/null || die "no go on PATH or in /usr/local/go/bin"

# podman as root (the default runtime and rootless setups fail on this
# machine's cgroups; chroot isolation for RUN, runc for run).
PODMAN=(podman)
if [ -n "$SUDO" ]; then PODMAN=(sudo podman); fi

tmp=$(mktemp -d)
cname=obmux-imagetest
image=localhost/obmux:imagetest
imagetest_pid=
ok=
cleanup() {
	set +e
	if [ -n "$imagetest_pid" ] && kill -0 "$imagetest_pid" 2>/dev/null; then
		kill "$imagetest_pid" 2>/dev/null
		wait "$imagetest_pid" 2>/dev/null
	fi
	if [ -z "$ok" ]; then
		if [ -s "$tmp/imagetest.log" ]; then echo "--- imagetest output"; cat "$tmp/imagetest.log"; fi
		if [ -s "$tmp/podman.err" ]; then echo "--- podman's stderr"; cat "$tmp/podman.err"; fi
		if "${PODMAN[@]}" container exists "$cname" 2>/dev/null; then
			echo "--- obmux's log (podman logs)"
			"${PODMAN[@]}" logs "$cname" 2>&1 | tail -n 60
		fi
	fi
	"${PODMAN[@]}" rm -f -t 0 "$cname" >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A container left over from an interrupted run.
"${PODMAN[@]}" rm -f -t 0 "$cname" >/dev/null 2>&1 || true

# --- the Go builder image, from this machine's toolchain ------------------
# FROM scratch: the Go tree (its binaries are static), busybox as /bin/sh for
# RUN, the host's CA certificates for module downloads, and /tmp.
goroot=$(go env GOROOT)
gover=$(go env GOVERSION)
builder=localhost/obmux-go-builder:$gover
if ! "${PODMAN[@]}" image exists "$builder"; then
	say "making $builder from $goroot"
	ctx=$tmp/builder
	mkdir -p "$ctx/root/bin" "$ctx/root/etc/ssl/certs" "$ctx/root/usr/local" "$ctx/root/tmp"
	chmod 1777 "$ctx/root/tmp"
	cp /bin/busybox "$ctx/root/bin/busybox"
	for a in sh ls cat mkdir rm cp mv env; do ln -s busybox "$ctx/root/bin/$a"; done
	cp /etc/ssl/certs/ca-certificates.crt "$ctx/root/etc/ssl/certs/"
	cp -a "$goroot" "$ctx/root/usr/local/go"
	cat >"$ctx/Containerfile" <<'EOF'
FROM scratch
COPY root/ /
ENV PATH=/usr/local/go/bin:/bin HOME=/tmp GOCACHE=/tmp/gocache GOPATH=/tmp/gopath GOTOOLCHAIN=local
EOF
	"${PODMAN[@]}" build --isolation chroot --format docker --layers=false -q -t "$builder" "$ctx" >/dev/null
	rm -rf "$ctx"
fi

# --- the obmux image ------------------------------------------------------
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
old_id=$("${PODMAN[@]}" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
say "building $image (VERSION=$version, GO_IMAGE=$builder, RUNTIME_IMAGE=scratch)"
tb=$(date +%s)
"${PODMAN[@]}" build --isolation chroot --format docker --pull=never --layers=false \
	--build-arg GO_IMAGE="$builder" --build-arg RUNTIME_IMAGE=scratch \
	--build-arg VERSION="$version" \
	--build-arg GOPROXY="$(go env GOPROXY)" --build-arg GOFLAGS="$(go env GOFLAGS)" \
	-t "$image" -f Dockerfile . >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; die "podman build failed"; }
build_s=$(($(date +%s) - tb))
new_id=$("${PODMAN[@]}" image inspect -f '{{.Id}}' "$image")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then "${PODMAN[@]}" rmi "$old_id" >/dev/null 2>&1 || true; fi
size=$("${PODMAN[@]}" image inspect -f '{{.Size}}' "$image")
say "built in ${build_s}s; image size $size bytes ($((size / 1024)) KiB)"

# What the image says about itself.
cfg=$("${PODMAN[@]}" image inspect -f '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.ExposedPorts}}' "$image")
say "image config: $cfg"
case $cfg in "65532:65532 [\"/obmux\"] "*8080/tcp*9108/tcp*) ;; *) die "unexpected image config: $cfg" ;; esac
hc=$("${PODMAN[@]}" image inspect -f '{{json .HealthCheck}}' "$image" 2>/dev/null || true)
case $hc in *'"/obmux","healthcheck"'*) ;; *) die "image has no HEALTHCHECK running /obmux healthcheck: $hc" ;; esac
# Without systemd, podman logs errors about healthcheck timers on run and
# stop: harmless (`podman healthcheck run` below runs the HEALTHCHECK once),
# so their stderr goes to $tmp/podman.err, shown on failure.
run=("${PODMAN[@]}" run --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host)
got=$("${run[@]}" --rm "$image" version 2>>"$tmp/podman.err")
[ "$got" = "obmux $version" ] || die "obmux version printed '$got', want 'obmux $version'"

# --- run it between the simulated peers -----------------------------------
go build -o "$tmp/imagetest" ./deploy/imagetest
"$tmp/imagetest" -env-file "$tmp/env" -version "$version" -timeout 120s >"$tmp/imagetest.log" 2>&1 &
imagetest_pid=$!

# wait_for FILE PATTERN SECONDS: poll until PATTERN is in FILE, imagetest
# has ended, or the deadline has passed.
wait_for() {
	local deadline=$(($(date +%s) + $3))
	until grep -q -- "$2" "$1" 2>/dev/null; do
		kill -0 "$imagetest_pid" 2>/dev/null || die "imagetest ended before '$2'"
		[ "$(date +%s)" -lt "$deadline" ] || die "no '$2' in $3 s"
		sleep 0.2
	done
}
wait_for "$tmp/imagetest.log" 'OBMUX_TARGET_ADMIN_TOKEN' 30
[ -s "$tmp/env" ] || die "imagetest wrote no environment"

tr=$(date +%s)
"${run[@]}" -d --name "$cname" --env-file "$tmp/env" "$image" >/dev/null 2>>"$tmp/podman.err"
wait_for "$tmp/imagetest.log" '^EVENTS-OK' 60
say "events reached both targets $(($(date +%s) - tr))s after podman run"

# `obmux healthcheck` inside the container, directly and as the image's HEALTHCHECK.
out=$("${PODMAN[@]}" exec "$cname" /obmux healthcheck) || die "obmux healthcheck in the container: exit $?: $out"
say "obmux healthcheck in the container: exit 0 ($out)"
hc_out=$("${PODMAN[@]}" healthcheck run "$cname" 2>&1) || die "podman healthcheck run: $hc_out"
say "podman healthcheck run (the image's HEALTHCHECK): healthy"

# Non-root: the container's process, seen from the host.
pid=$("${PODMAN[@]}" inspect -f '{{.State.Pid}}' "$cname")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
gid=$(awk '/^Gid:/ {print $2}' "/proc/$pid/status")
[ "$uid" != 0 ] && [ "$gid" != 0 ] || die "obmux runs as uid $uid gid $gid"
rss=$(awk '/^VmRSS:/ {print $2 " " $3}' "/proc/$pid/status")
say "obmux runs as uid $uid gid $gid (pid $pid on the host), VmRSS $rss"

ts=$(date +%s)
"${PODMAN[@]}" stop -t 20 "$cname" >/dev/null 2>>"$tmp/podman.err"
stop_s=$(($(date +%s) - ts))
rc=0
wait "$imagetest_pid" || rc=$?
imagetest_pid=
[ "$rc" -eq 0 ] || die "imagetest exited $rc"
grep -q '^SHUTDOWN-OK' "$tmp/imagetest.log" || die "imagetest did not see the shutdown"
exit_code=$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$cname")
[ "$exit_code" = 0 ] || die "obmux exited $exit_code after podman stop"
sed -n 's/^imagetest: /  /p' "$tmp/imagetest.log" | grep -v '^  environment' || true
say "podman stop took ${stop_s}s; both targets got lifecycle disable and close 1001; obmux exited 0"
ok=1
say "PASS: image $image, $size bytes, built in ${build_s}s"
