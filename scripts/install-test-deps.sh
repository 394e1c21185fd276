#!/usr/bin/env bash
# Installs the external clients the black-box tests drive, if they are missing:
# curl, openssl, mbsync (isync), sipp (sip-tester), systemd-analyze (systemd) from
# Debian, scramp from PyPI.
set -euo pipefail

need_apt=()
command -v curl    >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v mbsync  >/dev/null 2>&1 || need_apt+=(isync)
command -v sipp    >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${need_apt[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import scramp' >/dev/null 2>&1; then
  echo "installing Python package: scramp" >&2
  python3 -m pip install --quiet --disable-pip-version-check scramp==1.4.5
fi
