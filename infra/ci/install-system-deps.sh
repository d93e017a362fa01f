#!/usr/bin/env bash
# System packages the observability tests need: Prometheus (+ promtool) and Chromium (driven by
# Playwright with executable_path; no browser is downloaded). Idempotent: skips what is present.
# Needs root (apt-get). Usage: bash infra/ci/install-system-deps.sh
set -euo pipefail

missing=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-system-deps: prometheus and chromium already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}"
echo "install-system-deps: installed ${missing[*]}"
