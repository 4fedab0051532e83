#!/bin/sh
# Checks obmux's Prometheus files with promtool: the alert rules
# (check rules), their unit tests (test rules) and the example configuration
# (check config, which also loads alerts.yml through rule_files, resolved
# relative to prometheus.yml). Installs Debian's `prometheus` package, which
# ships promtool, when promtool is missing. Idempotent; runs from anywhere.
#
# Usage: deploy/check-prometheus.sh        (PROMTOOL=/path/to/promtool to use another)
set -eu

dir=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
prom="$dir/prometheus"
promtool=${PROMTOOL:-promtool}

if ! command -v "$promtool" >/dev/null 2>&1; then
	echo "promtool not found: installing Debian package prometheus" >&2
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "no apt-get here: install promtool (https://prometheus.io/download/) or set PROMTOOL" >&2
		exit 1
	fi
	sudo=
	if [ "$(id -u)" -ne 0 ]; then
		sudo=sudo
	fi
	# Meant for CI containers: where an init system runs, the package also
	# starts a Prometheus server.
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	promtool=promtool
fi

"$promtool" --version 2>&1 | head -n 1
"$promtool" check rules "$prom/alerts.yml"
"$promtool" test rules "$prom/alerts_test.yml"
"$promtool" check config "$prom/prometheus.yml"
echo "prometheus files OK"
