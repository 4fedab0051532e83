#!/usr/bin/env bash
# Lints the Dockerfile with dockerfilelint, pinned to an exact version from
# npm, installed (once) into a cache directory outside the work tree. Its
# configuration is deploy/.dockerfilelintrc. Needs node and npm (installed
# from Debian when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKERFILELINT_VERSION=1.8.0

SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
if ! command -v npm >/dev/null; then
	echo "lint: installing nodejs and npm"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi

dir=${XDG_CACHE_HOME:-$HOME/.cache}/obmux/dockerfilelint-$DOCKERFILELINT_VERSION
bin=$dir/node_modules/.bin/dockerfilelint
if [ ! -x "$bin" ]; then
	echo "lint: installing dockerfilelint@$DOCKERFILELINT_VERSION into $dir"
	mkdir -p "${dir%/*}"
	tmp=$(mktemp -d "${dir%/*}/.install.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && echo '{"private":true}' >package.json &&
		npm install --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
			"dockerfilelint@$DOCKERFILELINT_VERSION" >/dev/null)
	# Move into place whole, so that an interrupted install is never used.
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
fi

echo "lint: dockerfilelint $("$bin" --version 2>/dev/null || echo "$DOCKERFILELINT_VERSION") Dockerfile"
"$bin" -c deploy Dockerfile
