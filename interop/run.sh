#!/usr/bin/env bash
# Interop tests: the real obmux binary with software others wrote, ZeroBot
# v1.8.2 (Go, pinned in go.mod) and Python websockets (Debian's
# python3-websockets, installed here when missing). A module of its own, so
# obmux's go.mod does not depend on ZeroBot.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"

if ! /usr/bin/python3 -c 'import websockets' 2>/dev/null; then
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	echo "installing python3-websockets"
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq python3-websockets >/dev/null
fi
/usr/bin/python3 -c 'import websockets, sys; print("python", sys.version.split()[0], "websockets", websockets.__version__)'
go version

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
go vet ./...
# Under -race the test builds obmux and the ZeroBot bot with -race as well.
go test -race -count=1 -v ./... 2>&1 | grep -Ev '^=== RUN|ended [0-9.]+m?s after SIGTERM'
