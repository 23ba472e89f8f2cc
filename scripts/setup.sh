#!/usr/bin/env bash
# Installs the Debian 12 packages convnext.cpp builds, tests and runs with. Idempotent: skips
# apt entirely when everything is already there. clang, its runtime (libFuzzer, sanitizers) and
# LLVM's OpenMP are only for the fuzz smoke run of the test command (scripts/fuzz.sh).
set -euo pipefail
PACKAGES=(build-essential cmake pkg-config git
  libopenblas-dev catch2 libstb-dev zlib1g-dev nlohmann-json3-dev libcli11-dev libzip-dev
  libbenchmark-dev dataset-fashion-mnist libopenmpi-dev openmpi-bin fonts-dejavu-core
  clang libclang-rt-14-dev libomp-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
