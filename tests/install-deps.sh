#!/usr/bin/env bash
# Install what Trestle's integration tests run against (Debian/Ubuntu):
#   - Debian packages: inspircd atheme-services ngircd prosody prosody-modules (for
#     mod_muc_moderation) eatmydata postgresql openssl (test certificates)
#     (plus python3-venv when python3 is the system /usr/bin/python3);
#   - a Python venv with a pinned matrix-synapse, and one with a pinned schemathesis.
#
# Idempotent: when everything is present it prints nothing and takes well under 2 s.
# On install it reports progress on stderr. Exit status non-zero on failure.
#
# Usage:
#   tests/install-deps.sh                       ensure everything
#   tests/install-deps.sh --print-synapse-venv  ensure everything, then print the
#                                               venv path (only that, on stdout)
#   tests/install-deps.sh --print-schemathesis-venv   likewise for the schemathesis venv
#   tests/install-deps.sh --print-heisenbridge-venv   likewise for a venv with a pinned
#                                               heisenbridge (only bench-irc uses it; the
#                                               tests never install it)
#
# Environment:
#   TRESTLE_CACHE         cache root; default ${XDG_CACHE_HOME:-$HOME/.cache}/trestle.
#                         The venv is $TRESTLE_CACHE/synapse-<version>/.
#   TRESTLE_SYNAPSE_VENV  use this venv path instead (created there if missing);
#                         the Rust test harness honours the same variable.
#
# The daemons are never started by the install: a temporary policy-rc.d is used
# when none exists, and on systemd hosts the freshly installed units are disabled.
# Tests start their own instances with their own configs (tests/servers/).
set -euo pipefail

SYNAPSE_VERSION=1.163.2
SCHEMATHESIS_VERSION=4.32.5
HEISENBRIDGE_VERSION=1.15.4
DEB_PACKAGES=(inspircd atheme-services ngircd prosody prosody-modules eatmydata postgresql openssl)

die() { echo "install-deps: error: $*" >&2; exit 1; }
say() { echo "install-deps: $*" >&2; }

print_venv=0
case "${1:-}" in
  "") ;;
  --print-synapse-venv) print_venv=1 ;;
  --print-schemathesis-venv) print_venv=schemathesis ;;
  --print-heisenbridge-venv) print_venv=heisenbridge ;;
  -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

cache="${TRESTLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trestle}"
venv="${TRESTLE_SYNAPSE_VENV:-$cache/synapse-$SYNAPSE_VERSION}"
schemathesis_venv="$cache/schemathesis-$SCHEMATHESIS_VERSION"
heisenbridge_venv="$cache/heisenbridge-$HEISENBRIDGE_VERSION"

command -v python3 >/dev/null || die "python3 not found on PATH"
# Debian's own python needs python3-venv for `python3 -m venv`.
if [ "$(command -v python3)" = /usr/bin/python3 ] || [ "$(command -v python3)" = /bin/python3 ]; then
  DEB_PACKAGES+=(python3-venv)
fi

# ---- Debian packages ------------------------------------------------------
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "missing packages ${missing[*]}; run as root or install sudo"
    SUDO=(sudo)
  fi
  say "installing Debian packages: ${missing[*]}"
  # Keep the daemons from starting during the install.
  policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  cleanup_policy() { [ "$policy_added" = 1 ] && "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; true; }
  trap cleanup_policy EXIT
  "${SUDO[@]}" apt-get update -qq >&2 || die "apt-get update failed"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
  cleanup_policy; trap - EXIT
  # Installing enables the system units on systemd hosts; tests never use them.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    for u in inspircd atheme-services ngircd prosody postgresql; do
      case " ${missing[*]} " in *" $u "*)
        "${SUDO[@]}" systemctl disable --now --quiet "$u" >/dev/null 2>&1 || true ;;
      esac
    done
  fi
  for p in "${missing[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || die "package $p still not installed after apt-get"
  done
fi

# ---- Python venvs -------------------------------------------------------------
# ensure_venv DIR REQUIREMENT MODULE: a venv in DIR holding REQUIREMENT (pinned), checked by
# importing MODULE. A marker is written only after a complete install, so a half-built
# venv is redone; a lock serializes two test processes racing here.
ensure_venv() {
  local dir=$1 requirement=$2 module=$3
  local marker="$dir/.trestle-installed"
  [ -f "$marker" ] && return 0
  mkdir -p "$(dirname "$dir")"
  exec 9>"$dir.lock"
  flock 9
  if [ ! -f "$marker" ]; then
    say "creating a venv with $requirement in $dir (about 20-60 s)"
    rm -rf "$dir"
    python3 -m venv "$dir" >&2 || die "python3 -m venv $dir failed"
    "$dir/bin/pip" install --disable-pip-version-check -q "$requirement" >&2 \
      || { rm -rf "$dir"; die "pip install $requirement failed"; }
    "$dir/bin/python" -c "import $module" 2>/dev/null \
      || { rm -rf "$dir"; die "the venv $dir does not import $module"; }
    echo "$requirement" > "$marker"
    say "venv ready: $dir"
  fi
  exec 9>&-
}

if [ -n "${TRESTLE_SYNAPSE_VENV:-}" ] && [ -e "$venv" ]; then
  # A venv supplied by the user: use it if it works, never delete it.
  [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import synapse' 2>/dev/null \
    || die "TRESTLE_SYNAPSE_VENV=$venv has no working Synapse"
else
  ensure_venv "$venv" "matrix-synapse==$SYNAPSE_VERSION" synapse
fi
# Schemathesis checks the appservice endpoint against the spec's OpenAPI files.
ensure_venv "$schemathesis_venv" "schemathesis==$SCHEMATHESIS_VERSION" schemathesis

# heisenbridge, an IRC bridge to measure bridge-irc against (bench-irc): only on request.
if [ "$print_venv" = heisenbridge ]; then
  ensure_venv "$heisenbridge_venv" "heisenbridge==$HEISENBRIDGE_VERSION" heisenbridge
  echo "$heisenbridge_venv"
fi
if [ "$print_venv" = schemathesis ]; then
  echo "$schemathesis_venv"
fi
if [ "$print_venv" = 1 ]; then
  echo "$venv"
fi
