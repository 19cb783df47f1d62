#!/usr/bin/env bash
# Build the nginx test targets with OpenSSL linked statically (issue 8), from Debian's
# nginx 1.22.1 source and Debian 12's libssl-dev static archives:
#
#   $OUT/static-ssl/nginx         OpenSSL built in, stripped (.symtab gone). nginx links
#                                 with -Wl,-E, so ngx_* and SSL_* stay exported in .dynsym.
#   $OUT/static-ssl-nosym/nginx   the same objects linked with no exported symbol at all
#                                 (version script `local: *`, --exclude-libs,ALL), stripped:
#                                 no ngx_*, no SSL_* anywhere; SSL_read/SSL_write can only be
#                                 found by byte patterns.
#
# Idempotent: a variant is rebuilt only when its stamp (a hash of this script and of the
# libssl-dev / libpcre2-dev versions) differs. OUT defaults to /var/cache/ngxscope/nginx-builds.
# Needs: build-essential libpcre2-dev libssl-dev curl (scripts/setup.sh installs them).
set -euo pipefail

OUT=${NGXSCOPE_BUILDS:-/var/cache/ngxscope/nginx-builds}
VERSION=1.22.1
URL=http://deb.debian.org/debian/pool/main/n/nginx/nginx_${VERSION}.orig.tar.gz
# = upstream nginx-1.22.1.tar.gz; also listed in Debian's nginx_1.22.1-9+deb12u3.dsc
SHA256=9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31
LIBDIR=/usr/lib/x86_64-linux-gnu
VARIANTS=(static-ssl static-ssl-nosym)

log() { printf 'build-nginx-static: %s\n' "$*" >&2; }
die() { printf 'build-nginx-static: %s\n' "$*" >&2; exit 1; }

stamp_want() {
  { sha256sum "$0" | cut -d' ' -f1
    dpkg-query -W -f='${Version}\n' libssl-dev libpcre2-dev 2>/dev/null || true
  } | sha256sum | cut -d' ' -f1
}
WANT=$(stamp_want)

todo=()
for v in "${VARIANTS[@]}"; do
  if [ -x "$OUT/$v/nginx" ] && [ "$(cat "$OUT/$v/.stamp" 2>/dev/null)" = "$WANT" ]; then
    continue
  fi
  todo+=("$v")
done
if [ ${#todo[@]} -eq 0 ]; then
  log "up to date in $OUT (${VARIANTS[*]})"
  exit 0
fi

for f in libssl.a libcrypto.a; do
  [ -f "$LIBDIR/$f" ] || die "$LIBDIR/$f missing: install libssl-dev (scripts/setup.sh)"
done
command -v gcc >/dev/null || die "gcc missing: install build-essential (scripts/setup.sh)"

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
started=$(date +%s)

tarball="$OUT/.nginx_${VERSION}.orig.tar.gz"
if ! [ -f "$tarball" ] || [ "$(sha256sum "$tarball" | cut -d' ' -f1)" != "$SHA256" ]; then
  log "downloading $URL"
  curl -fsS --retry 3 -o "$WORK/src.tar.gz" "$URL" || die "download failed: $URL"
  got=$(sha256sum "$WORK/src.tar.gz" | cut -d' ' -f1)
  [ "$got" = "$SHA256" ] || die "sha256 mismatch for $URL: got $got, want $SHA256"
  mv "$WORK/src.tar.gz" "$tarball"
fi
tar -xzf "$tarball" -C "$WORK"
SRC="$WORK/nginx-$VERSION"

# A directory holding only the static archives: -L finds libssl.a there before any .so.
mkdir -p "$WORK/staticlibs"
ln -s "$LIBDIR/libssl.a" "$LIBDIR/libcrypto.a" "$WORK/staticlibs/"

# Only what the lab's nginx.conf (ngxscope/lab/config.py) uses: ssl, http_v2, proxy with
# upstream keepalive, rewrite (return), the *_temp_path directives of fastcgi/uwsgi/scgi.
cd "$SRC"
log "configuring nginx $VERSION (static OpenSSL from $LIBDIR)"
./configure \
  --prefix=/usr/share/nginx \
  --with-http_ssl_module --with-http_v2_module --with-threads \
  --with-cc-opt='-O2 -fPIC' \
  --with-ld-opt="-L$WORK/staticlibs -Wl,-z,relro -Wl,-z,now" \
  --without-http_gzip_module --without-http_charset_module --without-http_ssi_module \
  --without-http_userid_module --without-http_auth_basic_module --without-http_mirror_module \
  --without-http_autoindex_module --without-http_geo_module --without-http_map_module \
  --without-http_split_clients_module --without-http_referer_module \
  --without-http_grpc_module --without-http_memcached_module --without-http_empty_gif_module \
  --without-http_browser_module --without-http_limit_conn_module --without-http_limit_req_module \
  --without-http_upstream_hash_module --without-http_upstream_ip_hash_module \
  --without-http_upstream_least_conn_module --without-http_upstream_random_module \
  >"$WORK/configure.log" 2>&1 || { tail -20 "$WORK/configure.log" >&2; die "configure failed"; }
grep -q -- '-Wl,-E' objs/Makefile || die "objs/Makefile has no -Wl,-E link flag (nginx changed?)"
log "compiling (make -j2)"
make -j2 -f objs/Makefile >"$WORK/make.log" 2>&1 || { tail -30 "$WORK/make.log" >&2; die "make failed"; }

check_static() {  # the binary must not need libssl/libcrypto at run time
  if readelf -d "$1" | grep -Eq 'NEEDED.*lib(ssl|crypto)'; then die "$1 links libssl dynamically"; fi
}

install_variant() {  # $1 variant, $2 built binary
  mkdir -p "$OUT/$1"
  strip "$2"
  check_static "$2"
  cp "$2" "$OUT/$1/nginx.new"
  mv "$OUT/$1/nginx.new" "$OUT/$1/nginx"
  echo "$WANT" >"$OUT/$1/.stamp"
  log "$1: $OUT/$1/nginx ($(stat -c %s "$OUT/$1/nginx") bytes)"
}

cp objs/nginx "$WORK/nginx.static-ssl"
install_variant static-ssl "$WORK/nginx.static-ssl"

# Relink the same objects without exporting anything: no -Wl,-E, every symbol local.
printf '{ local: *; };\n' >"$WORK/local.map"
sed -i "s|-Wl,-E|-Wl,--version-script=$WORK/local.map -Wl,--exclude-libs,ALL|" objs/Makefile
rm -f objs/nginx
make -f objs/Makefile objs/nginx >>"$WORK/make.log" 2>&1 || { tail -30 "$WORK/make.log" >&2; die "relink failed"; }
if readelf --dyn-syms -W objs/nginx | awk '$7 != "UND"' | grep -Eq ' (ngx_|SSL_)'; then
  die "static-ssl-nosym still exports ngx_*/SSL_* symbols"
fi
install_variant static-ssl-nosym objs/nginx

log "done in $(( $(date +%s) - started ))s"
