#!/usr/bin/env bash
# Installs the system packages AdapterHost needs, if any are missing (Debian/Ubuntu).
# Swift itself (6.x) is expected on PATH.
set -euo pipefail
packages=(libopenblas-dev liblapacke-dev libffi-dev libpng-dev libjpeg-dev pkg-config make)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "swift not found on PATH (Swift 6.x required)" >&2; exit 1; }
