#!/usr/bin/env bash
# Make sure the real Prometheus server and promtool (Debian package `prometheus`) are installed.
# The package's own service is not started: the tests start their own servers.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "ensure-prometheus: prometheus is missing; install the Debian package 'prometheus' (needs root)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
prometheus --version 2>&1 | head -1
