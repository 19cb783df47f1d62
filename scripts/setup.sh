#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine, run as root:
# Debian packages, kernel headers for bcc, tracefs, the venv with its PyPI packages,
# and Debian's bcc module exposed (alone) inside the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: must run as root (it installs Debian packages and mounts tracefs)" >&2
  exit 1
fi

DEBS=(python3-bpfcc libbpfcc nginx libnginx-mod-stream openssl curl wrk tshark xvfb xauth
      libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
      libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0
      libxcb-randr0 libxcb-render-util0 libxcb-image0 libglib2.0-0 fonts-dejavu-core
      binutils procps iproute2 prometheus openssh-server openssh-client
      nftables  # tests/capture/test_wire_netns.py: packet loss inside a network namespace
      build-essential libpcre2-dev libssl-dev  # these three: scripts/build-nginx-static.sh
      dpkg-dev python3-venv lintian appstream libwayland-cursor0 libwayland-egl1  # packaging/build-deb.sh
      python3-dev  # the compiled hot path of the .deb's interpreter (packaging/build-deb.sh)
      pkexec polkitd dbus-daemon strace)  # tests/deb: the .deb used as a normal user
KVER=$(uname -r)
# bcc compiles against kernel headers: the running kernel's own package if Debian has one,
# else Debian's current amd64 headers (linked in below).
if ! [ -e "/lib/modules/$KVER/build/include" ]; then
  if apt-cache show "linux-headers-$KVER" >/dev/null 2>&1; then DEBS+=("linux-headers-$KVER"); else DEBS+=(linux-headers-amd64); fi
fi

missing=()
for p in "${DEBS[@]}"; do
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"install ok installed"* ]] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  # nginx's postinst would start a system nginx on port 80; ngxscope never needs it.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/ngxscope-apt.log 2>&1; then
    apt-get update -q >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/ngxscope-apt.log 2>&1 \
      || { tail -20 /tmp/ngxscope-apt.log >&2; echo "setup: apt-get install failed (log: /tmp/ngxscope-apt.log)" >&2; exit 1; }
  fi
  rm -f /usr/sbin/policy-rc.d; trap - EXIT
fi

# Point bcc at the nearest Debian headers when the running kernel has none packaged.
if ! [ -e "/lib/modules/$KVER/build/include" ]; then
  amd=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
  if [ -n "$amd" ]; then
    common=${amd%-amd64}-common
    mkdir -p "/lib/modules/$KVER"
    ln -sfn "$amd" "/lib/modules/$KVER/build"
    ln -sfn "$common" "/lib/modules/$KVER/source"
    log "kernel $KVER has no headers package; bcc will use $(basename "$amd")"
  fi
fi

if ! [ -d /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

# nginx with OpenSSL linked statically (stripped, and without any exported symbol) for the
# capture tests of static builds; skipped when built by the same recipe already.
bash scripts/build-nginx-static.sh

# The venv: pyenv's CPython 3.11 when present, else the system python3.
PY=""
for cand in "${NGXSCOPE_PYTHON:-}" "$(command -v pyenv >/dev/null 2>&1 && pyenv which python3.11 2>/dev/null || true)" \
            /root/.pyenv/versions/3.11*/bin/python3.11 "$(command -v python3.11 || true)" "$(command -v python3 || true)"; do
  if [ -n "$cand" ] && [ -x "$cand" ]; then PY=$cand; break; fi
done
[ -n "$PY" ] || { echo "setup: no python3 found" >&2; exit 1; }
if ! [ -x .venv/bin/python ]; then
  log "creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.ngxscope-deps
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing the project and its PyPI packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

# --- i14b: bpf/ and resources/ live at the top of the repository (pyproject.toml maps them
# into the package). A checkout from before keeps an untracked app/ngxscope/bpf/__pycache__,
# and that empty folder would shadow the real ngxscope.bpf: remove it.
if [ -d app/ngxscope/bpf ] && ! ls app/ngxscope/bpf/*.c >/dev/null 2>&1; then
  rm -rf app/ngxscope/bpf
  log "removed the stale app/ngxscope/bpf (the C programs are in bpf/ now)"
fi
bpf_ok() { (cd / && "$ROOT/.venv/bin/python" -c 'from importlib.resources import files; files("ngxscope.bpf").joinpath("events.h").read_bytes()') >/dev/null 2>&1; }
if ! bpf_ok; then  # a venv installed before the mapping: install the project again
  log "reinstalling the project into .venv (ngxscope.bpf not importable)"
  .venv/bin/python -m pip install -q -e ".[dev]"
  bpf_ok || { echo "setup: ngxscope.bpf is not importable from .venv" >&2; exit 1; }
fi
# --- end i14b

# The compiled hot path (C extensions beside their pure-Python reference, built in place
# under app/): rebuilt only when a source, the interpreter or the recipe changed.
.venv/bin/python scripts/build_ext.py || { echo "setup: building the compiled hot path failed" >&2; exit 1; }

# Expose Debian's pure-Python bcc module, and only it, to the venv.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"
.venv/bin/python -c 'import bcc' || { echo "setup: bcc is not importable from .venv" >&2; exit 1; }
log "ready: $ROOT/.venv/bin/ngxscope"
