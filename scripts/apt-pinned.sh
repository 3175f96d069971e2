#!/usr/bin/env bash
# Installs Debian packages at the pinned versions given as `name=version`, only those not
# already installed at that version. Sourced by scripts that need real third-party clients or
# peers (curl, Python's requests + PySocks, microsocks, dante, nginx, wrk).
apt_pinned() {
  local missing=() spec name version
  for spec in "$@"; do
    name=${spec%%=*}
    version=${spec#*=}
    if [ "$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null)" != "$version" ]; then
      missing+=("$spec")
    fi
  done
  ((${#missing[@]} == 0)) && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing from Debian: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
