#!/usr/bin/env bash
# Build build/ngxscope_<version>_<arch>.deb from this checkout (run as any user; needs
# dpkg-dev's dpkg-deb and Debian's python3 with venv; scripts/setup.sh installs them).
#
# The app and its PyPI dependencies go into a private venv at /usr/lib/ngxscope, made with
# Debian's own /usr/bin/python3 (the interpreter the installed package runs on), filled from
# the package index by name, with Debian's bcc module (python3-bpfcc) linked in alone, as
# scripts/setup.sh does for .venv. A venv rather than a vendored site dir: it sees neither
# /usr/lib/python3/dist-packages nor ~/.local, so Debian's numpy or a user's pip install can
# never shadow a pinned dependency (PySide6 6.11: 6.12 aborts). PySide6, numpy and orjson
# are compiled wheels for this interpreter's ABI: the package is _amd64 and depends on
# python3 (>= 3.11), python3 (<< 3.12).
#
# Cached between runs (build/deb-cache): the venv with the dependencies, keyed by
# pyproject.toml and the interpreter; the project itself is reinstalled every build.
#   NGXSCOPE_DEB_XZ_LEVEL=0..9: xz level of the archive; 0 by default (~17 s, 49 MB), 6 is
#   the smallest (39 MB) but takes minutes for the ~175 MB venv. (zstd would be faster still,
#   but lintian and older dpkg reject zstd members.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf 'build-deb: %s\n' "$*" >&2; }
# pip's output goes to a log, shown when it fails (this machine's pip config is chatty)
pip_q() { "$@" >build/pip.log 2>&1 || { tail -20 build/pip.log >&2; die "pip failed (log: build/pip.log)"; }; }
die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }

PY=/usr/bin/python3
[ -x "$PY" ] || die "$PY not found: the package runs on Debian's python3 (apt-get install python3 python3-venv)"
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$PYVER" in 3.1[1-9]) ;; *) die "$PY is Python $PYVER; ngxscope needs >= 3.11" ;; esac
PYNEXT=$("$PY" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
"$PY" -c 'import ensurepip' 2>/dev/null || die "$PY has no venv support (apt-get install python3-venv)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt-get install dpkg-dev)"
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
ARCH=$(dpkg --print-architecture)
PREFIX=/usr/lib/ngxscope
HELPER=/usr/libexec/ngxscope/ngxscope-capture-helper
OUT=build/ngxscope_${VERSION}_${ARCH}.deb
STAGE=build/deb-root
CACHE=build/deb-cache
VENV=$STAGE$PREFIX
DATE=$(git log -1 --format=%cs 2>/dev/null || date -u +%F)
XZ_LEVEL=${NGXSCOPE_DEB_XZ_LEVEL:-0}
MAINTAINER=${NGXSCOPE_DEB_MAINTAINER:-ngxscope developers <ngxscope@localhost>}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

# -- the dependencies' venv (cached) -------------------------------------------------------
key=$( (echo recipe 2; cat pyproject.toml packaging/prune_qt.py; "$PY" -VV) | sha256sum | cut -d" " -f1)
mkdir -p build
if [ "$(cat "$CACHE/key" 2>/dev/null)" != "$key" ]; then
  log "creating the dependencies' venv with $PY ($("$PY" -V))"
  rm -rf "$CACHE"; mkdir -p "$CACHE"
  "$PY" -m venv "$CACHE/venv"
  pip_q "$CACHE/venv/bin/python" -m pip install -q --no-compile "$ROOT"
  # the project's build backend, so each build reinstalls it without an isolated build env
  pip_q "$CACHE/venv/bin/python" -m pip install -q --no-compile "setuptools>=77" wheel
  site=$("$CACHE/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mb=$("$CACHE/venv/bin/python" packaging/prune_qt.py "$site")
  log "PySide6 pruned to what the window loads (-$mb MB)"
  echo "$key" > "$CACHE/key"
fi

t_venv=$SECONDS
# -- the staged tree -------------------------------------------------------------------------
rm -rf "$STAGE"; mkdir -p "$(dirname "$VENV")"
# hard links: fast, and safe as every later change replaces a file or only drops its x bits
cp -al "$CACHE/venv" "$VENV"
pip_q "$VENV/bin/python" -m pip install -q --no-compile --no-deps --force-reinstall --no-build-isolation "$ROOT"
# the project's C extensions (the compiled hot path, pyproject's ext-modules) were built for
# this interpreter by the install above; without them the package would run its slower
# pure-Python path
"$VENV/bin/python" -I -c 'from ngxscope.capture import _fastevents; from ngxscope.decode import _fasthttp1, _fastmodel; from ngxscope.store import _fastcodec' \
  || die "the compiled hot path was not built (needs gcc and python3-dev)"
pip_q "$VENV/bin/python" -m pip uninstall -q -y pip setuptools wheel
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
find "$VENV/bin" -mindepth 1 ! -name 'python*' -delete
find "$site" -name direct_url.json -delete
rm -rf "$site/pyqtgraph/examples" "$site"/numpy/*/tests  # never imported
# nothing under lib/ is run directly: shared objects are mapped, modules imported
find "$VENV/lib" -type f -perm /111 -exec chmod 0644 {} +
sed -i "s#^command = .*#command = $PY -m venv $PREFIX#" "$VENV/pyvenv.cfg"
ln -sfn ../../../../python3/dist-packages/bcc "$site/bcc"  # Debian's python3-bpfcc, alone
text=(--include='*.py' --include='*.cfg' --include='*.json' --include='*.txt' --include='*.pth' --include=METADATA)
if grep -rIl "${text[@]}" "$ROOT" "$VENV" >/dev/null; then
  die "build paths left in the venv: $(grep -rIl "${text[@]}" "$ROOT" "$VENV" | head -3 | tr '\n' ' ')"
fi

t_stage=$SECONDS
install -d "$STAGE/usr/bin" "$STAGE/usr/libexec/ngxscope"
cat > "$STAGE/usr/bin/ngxscope" <<EOF
#!/bin/sh
# -I: neither the current directory nor PYTHON* variables reach the import path
exec $PREFIX/bin/python3 -I -m ngxscope "\$@"
EOF
cat > "$STAGE$HELPER" <<EOF
#!/bin/sh
# ngxscope's capture helper, run as root by pkexec (polkit action org.ngxscope.record).
# It accepts only --pid PID and streams the capture to its caller (ngxscope.helper).
exec $PREFIX/bin/python3 -I -B -m ngxscope.helper "\$@"
EOF
chmod 0755 "$STAGE/usr/bin/ngxscope" "$STAGE$HELPER"

res=resources
install -D -m0644 $res/ngxscope.desktop "$STAGE/usr/share/applications/ngxscope.desktop"
install -D -m0644 $res/ngxscope.svg "$STAGE/usr/share/icons/hicolor/scalable/apps/ngxscope.svg"
install -D -m0644 $res/org.ngxscope.ngxscope.metainfo.xml "$STAGE/usr/share/metainfo/org.ngxscope.ngxscope.metainfo.xml"
install -D -m0644 $res/org.ngxscope.record.policy "$STAGE/usr/share/polkit-1/actions/org.ngxscope.record.policy"
install -D -m0644 $res/ngxscope-record.service "$STAGE/lib/systemd/system/ngxscope-record.service"
sed -i 's#^Documentation=.*#Documentation=man:ngxscope(1) file:///usr/share/doc/ngxscope/SERVICE.md#' \
  "$STAGE/lib/systemd/system/ngxscope-record.service"
install -D -m0644 $res/ngxscope.conf "$STAGE/etc/ngxscope/ngxscope.conf"
sed -i -e 's#^NGXSCOPE_BIN=.*#NGXSCOPE_BIN=/usr/bin/ngxscope#' \
  -e 's#^\# The ngxscope executable.*#\# The ngxscope executable (the Debian package: /usr/bin/ngxscope).#' "$STAGE/etc/ngxscope/ngxscope.conf"
install -D -m0644 packaging/lintian-overrides "$STAGE/usr/share/lintian/overrides/ngxscope"

"$VENV/bin/python" -I -B packaging/argparse_docs.py man "$STAGE/ngxscope.1" --date "$DATE"
install -d "$STAGE/usr/share/man/man1" "$STAGE/usr/share/bash-completion/completions"
gzip -9n < "$STAGE/ngxscope.1" > "$STAGE/usr/share/man/man1/ngxscope.1.gz"; rm "$STAGE/ngxscope.1"
"$VENV/bin/python" -I -B packaging/argparse_docs.py bash "$STAGE/usr/share/bash-completion/completions/ngxscope"

doc=$STAGE/usr/share/doc/ngxscope
install -D -m0644 README.md "$doc/README.md"
install -D -m0644 docs/SERVICE.md "$doc/SERVICE.md"
"$VENV/bin/python" -I -B packaging/copyright.py "$site" > "$doc/copyright"
printf 'ngxscope (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- %s  %s\n' \
  "$VERSION" "$(git describe --always --dirty 2>/dev/null || echo 'a source tree')" \
  "$MAINTAINER" "$(date -u -R -d "$DATE")" | gzip -9n > "$doc/changelog.gz"

t_files=$SECONDS
# -- control files -----------------------------------------------------------------------------
shlibs=$("$VENV/bin/python" -I -B packaging/shlibdeps.py "$VENV" | paste -sd, | sed 's/,/, /g')
[ -n "$shlibs" ] || die "shlibdeps found no libraries"
find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +  # postinst compiles
ln -sfn ../../../bin/python3 "$VENV/bin/python3"  # /usr/bin/python3, relative (last: the staged venv stops working)
install -d "$STAGE/DEBIAN"
cat > "$STAGE/DEBIAN/control" <<EOF
Package: ngxscope
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Depends: python3 (>= $PYVER), python3 (<< $PYNEXT), python3-bpfcc, $shlibs
Recommends: pkexec, linux-headers-$ARCH
Suggests: nginx
Section: net
Priority: optional
Description: see every HTTP request a running nginx handles, live (eBPF)
 ngxscope shows, live, every HTTP request a running nginx handles: TLS
 traffic in plaintext, with its timing, sizes and worker, and which upstream
 served each request, without touching nginx (no configuration change,
 restart, module, proxy or keys). eBPF uprobes (bcc) on nginx's own I/O
 functions see the bytes.
 .
 The window runs as the user; a small capture helper is started through
 pkexec (polkit action org.ngxscope.record). Sessions can be saved and
 exported as HAR, pcapng, CSV or JSON Lines; a systemd unit records
 headless, with Prometheus metrics and OpenTelemetry traces.
 .
 The Python dependencies (PySide6, numpy, ...) are in a private venv under
 /usr/lib/ngxscope.
EOF
echo /etc/ngxscope/ngxscope.conf > "$STAGE/DEBIAN/conffiles"
install -m0755 packaging/postinst packaging/prerm "$STAGE/DEBIAN/"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/md5sums" "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/conffiles"

t_control=$SECONDS
case "$XZ_LEVEL" in [0-9]) ;; *) die "NGXSCOPE_DEB_XZ_LEVEL must be 0..9" ;; esac
SOURCE_DATE_EPOCH=$(date -u -d "$DATE" +%s) dpkg-deb --root-owner-group -Zxz "-z$XZ_LEVEL" --build "$STAGE" "$OUT" >/dev/null
log "built $OUT ($(du -h "$OUT" | cut -f1), installed $(du -sh --exclude=DEBIAN "$STAGE" | cut -f1)) in ${SECONDS} s:" \
  "deps venv $t_venv s, project $((t_stage - t_venv)) s, files $((t_files - t_stage)) s," \
  "control $((t_control - t_files)) s, archive $((SECONDS - t_control)) s"
echo "$OUT"
