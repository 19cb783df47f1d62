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
#   $OUT/static-ssl111-nosym/nginx  like static-ssl-nosym, with OpenSSL 1.1.1 from Debian 11's
#                                 libssl-dev .deb (headers and static archives, dpkg-deb -x):
#                                 the second byte pattern set.
#
# Idempotent: nothing is done when every variant's stamp (a hash of this script and of the
# libssl-dev / libpcre2-dev versions) is current; else all are rebuilt (about 40 s, 2 cores). OUT defaults to /var/cache/ngxscope/nginx-builds.
# Needs: build-essential libpcre2-dev libssl-dev curl (scripts/setup.sh installs them).
set -euo pipefail

OUT=${NGXSCOPE_BUILDS:-/var/cache/ngxscope/nginx-builds}
VERSION=1.22.1
URL=http://deb.debian.org/debian/pool/main/n/nginx/nginx_${VERSION}.orig.tar.gz
# = upstream nginx-1.22.1.tar.gz; also listed in Debian's nginx_1.22.1-9+deb12u3.dsc
SHA256=9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31
LIBDIR=/usr/lib/x86_64-linux-gnu
DEB111=http://deb.debian.org/debian/pool/main/o/openssl/libssl-dev_1.1.1w-0+deb11u1_amd64.deb
DEB111_SHA256=56aab36e214954ff19e55cb7ebc96921ebd6387c266c906649ad909933d455b7
VARIANTS=(static-ssl static-ssl-nosym static-ssl111-nosym)

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

fetch() {  # $1 url, $2 sha256, $3 cached file: download once, verify every time
  if ! [ -f "$3" ] || [ "$(sha256sum "$3" | cut -d' ' -f1)" != "$2" ]; then
    log "downloading $1"
    curl -fsS --retry 3 -o "$WORK/download" "$1" || die "download failed: $1"
    got=$(sha256sum "$WORK/download" | cut -d' ' -f1)
    [ "$got" = "$2" ] || die "sha256 mismatch for $1: got $got, want $2"
    mv "$WORK/download" "$3"
  fi
}

fetch "$URL" "$SHA256" "$OUT/.nginx_${VERSION}.orig.tar.gz"

# One source tree per OpenSSL: $1 name, $2 directory of libssl.a + libcrypto.a, $3 cc flags.
# A directory holding only the static archives: -L finds libssl.a there before any .so.
# Only what the lab's nginx.conf (ngxscope/lab/config.py) uses: ssl, http_v2, proxy with
# upstream keepalive, rewrite (return), the *_temp_path directives of fastcgi/uwsgi/scgi.
compile_nginx() {
  local src="$WORK/$1/nginx-$VERSION"
  mkdir -p "$WORK/$1/staticlibs"
  tar -xzf "$OUT/.nginx_${VERSION}.orig.tar.gz" -C "$WORK/$1"
  ln -s "$2/libssl.a" "$2/libcrypto.a" "$WORK/$1/staticlibs/"
  cd "$src"
  log "$1: configuring nginx $VERSION (static OpenSSL from $2)"
  ./configure \
    --prefix=/usr/share/nginx \
    --with-http_ssl_module --with-http_v2_module --with-threads \
    --with-cc-opt="-O2 -fPIC $3" \
    --with-ld-opt="-L$WORK/$1/staticlibs -Wl,-z,relro -Wl,-z,now" \
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
  log "$1: compiling (make -j2)"
  make -j2 -f objs/Makefile >"$WORK/make.log" 2>&1 || { tail -30 "$WORK/make.log" >&2; die "make failed"; }
}

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

relink_nosym() {  # the same objects without exporting anything: no -Wl,-E, all local
  printf '{ local: *; };\n' >"$WORK/local.map"
  sed -i "s|-Wl,-E|-Wl,--version-script=$WORK/local.map -Wl,--exclude-libs,ALL|" objs/Makefile
  rm -f objs/nginx
  make -f objs/Makefile objs/nginx >>"$WORK/make.log" 2>&1 || { tail -30 "$WORK/make.log" >&2; die "relink failed"; }
  if readelf --dyn-syms -W objs/nginx | awk '$7 != "UND"' | grep -Eq ' (ngx_|SSL_)'; then
    die "$1 still exports ngx_*/SSL_* symbols"
  fi
  install_variant "$1" objs/nginx
}

compile_nginx openssl30 "$LIBDIR" ""
cp objs/nginx "$WORK/nginx.static-ssl"
install_variant static-ssl "$WORK/nginx.static-ssl"
relink_nosym static-ssl-nosym

# OpenSSL 1.1.1: headers and archives from Debian 11's libssl-dev, unpacked (not installed)
fetch "$DEB111" "$DEB111_SHA256" "$OUT/.libssl-dev_1.1.1.deb"
dpkg-deb -x "$OUT/.libssl-dev_1.1.1.deb" "$WORK/deb111"
inc="$WORK/deb111/usr/include"
compile_nginx openssl111 "$WORK/deb111/usr/lib/x86_64-linux-gnu" "-I$inc/x86_64-linux-gnu -I$inc"
"$WORK/openssl111/nginx-$VERSION/objs/nginx" -V 2>&1 | grep -q 'built with OpenSSL 1.1.1' \
  || die "static-ssl111-nosym: not built with OpenSSL 1.1.1"
relink_nosym static-ssl111-nosym

log "done in $(( $(date +%s) - started ))s"
