#!/usr/bin/env bash
# Build the nginx test targets with OpenSSL linked statically (issues 8, 13), from Debian's
# nginx source (1.22.1 in Debian 12) and several OpenSSL builds:
#
#   $OUT/static-ssl/nginx         the installed libssl-dev's libssl.a/libcrypto.a (whatever
#                                 point release apt installed), stripped (.symtab gone).
#                                 nginx links with -Wl,-E: ngx_* and SSL_* stay in .dynsym.
#   $OUT/static-ssl-nosym/nginx   the same objects linked with no exported symbol at all
#                                 (version script `local: *`, --exclude-libs,ALL), stripped:
#                                 no ngx_*, no SSL_* anywhere.
#   $OUT/static-ssl111-nosym/nginx  likewise with OpenSSL 1.1.1 from Debian 11's libssl-dev
#                                 .deb (headers and static archives, dpkg-deb -x).
#   $OUT/static-ssl3-O3-nosym/nginx, static-ssl3-Os-nosym/nginx  likewise with a libssl.a
#                                 compiled here (-O3 out of tree, -Os in tree; Debian's
#                                 Configure options) from Debian 12's openssl source package,
#                                 linked with the libcrypto.a of the same version's .deb.
#
# Each *-nosym directory also holds nginx.unstripped (the same link before strip: .symtab
# names SSL_read... where the stripped copy has nothing) and openssl.txt (version, flags).
# Sources and .debs come through apt (scripts/apt-private.sh: the machine's own archive
# entries plus deb-src and Debian 11, in a private configuration; apt verifies them).
#
# Idempotent: nothing is done when every variant's stamp (a hash of these scripts and of the
# installed libssl-dev / libpcre2-dev versions) is current; else all are rebuilt (about 160 s
# of CPU, 3 nginx compiles and 2 libssl.a; 6 min wall on 2 cores shared at load 6-8).
# OUT defaults to /var/cache/ngxscope/nginx-builds.
# Needs: build-essential dpkg-dev libpcre2-dev libssl-dev perl (scripts/setup.sh installs them).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${NGXSCOPE_BUILDS:-/var/cache/ngxscope/nginx-builds}
LIBDIR=/usr/lib/x86_64-linux-gnu
VARIANTS=(static-ssl static-ssl-nosym static-ssl111-nosym static-ssl3-O3-nosym static-ssl3-Os-nosym)
# OpenSSL 3 libssl.a flavours built here: "variant suffix:build directory:CFLAGS". The first
# builds out of tree (__FILE__ "../ssl/ssl_lib.c", as Debian's), the second in the source
# tree ("ssl/ssl_lib.c"; OpenSSL refuses an out-of-tree build once the tree is configured).
OPENSSL3_FLAVOURS=("O3:build-O3:-O3 -fPIC" "Os:.:-Os -fPIC")
# Debian's CONFARGS for amd64 (debian/rules of openssl 3.0), minus the install paths: the
# libssl built here must agree with Debian's libcrypto.a and headers on every OPENSSL_NO_*.
DEBIAN_CONFARGS=(no-idea no-mdc2 no-rc5 no-zlib no-ssl3 no-ssl3-method enable-rfc3779 enable-cms
                 no-capieng no-rdrand enable-ec_nistp_64_gcc_128)
OLD_SSL_SUITE_VERSION='1.1.1*'  # libssl-dev from Debian 11 (scripts/apt-private.sh adds it)

log() { printf 'build-nginx-static: [%ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'build-nginx-static: %s\n' "$*" >&2; exit 1; }
apt_private() { bash "$HERE/apt-private.sh" "$@"; }

stamp_want() {
  { cat "$0" "$HERE/apt-private.sh" | sha256sum | cut -d' ' -f1
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
for tool in gcc make perl dpkg-source; do
  command -v $tool >/dev/null || die "$tool missing: install build-essential dpkg-dev perl (scripts/setup.sh)"
done

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
started=$(date +%s)
rm -f "$OUT"/.nginx_*.orig.tar.gz "$OUT"/.libssl-dev_*.deb  # downloads of the old script

log "refreshing the private apt lists (scripts/apt-private.sh)"
apt_private update

# Versions of a source package, newest first.
src_versions() {
  apt_private cache showsrc "$1" | awk '/^Version:/ { print $2 }' | sort -u \
    | sort -r -V
}
# The newest version of binary package $1 matching glob $2 that downloads (into the cwd).
download_deb() {
  local v
  for v in $(apt_private cache madison "$1" | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' | sort -r -V); do
    # shellcheck disable=SC2254
    case $v in $2) ;; *) continue ;; esac
    if apt_private download "$1=$v" >>"$WORK/apt.log" 2>&1; then echo "$v"; return 0; fi
  done
  return 1
}

# nginx: the orig tarball of the newest source version that downloads completely (a
# security archive may list a version whose files are not served yet).
mkdir -p "$WORK/src-nginx"
for v in $(src_versions nginx); do
  if (cd "$WORK/src-nginx" && apt_private source -d "nginx=$v" >>"$WORK/apt.log" 2>&1); then
    NGINX_TGZ=$(ls "$WORK"/src-nginx/nginx_*.orig.tar.gz 2>/dev/null | head -1)
    [ -n "$NGINX_TGZ" ] && break
  fi
  rm -f "$WORK"/src-nginx/*
done
[ -n "${NGINX_TGZ:-}" ] || { tail -5 "$WORK/apt.log" >&2; die "apt-get source nginx failed"; }
VERSION=$(basename "$NGINX_TGZ" | sed -E 's/^nginx_([0-9.]+)\.orig\.tar\.gz$/\1/')
log "nginx $VERSION source: $(basename "$NGINX_TGZ")"
# One source tree per OpenSSL: $1 name, $2 directory of libssl.a + libcrypto.a, $3 cc flags.
# A directory holding only the static archives: -L finds libssl.a there before any .so.
# Only what the lab's nginx.conf (ngxscope/lab/config.py) uses: ssl, http_v2, proxy with
# upstream keepalive, rewrite (return), the *_temp_path directives of fastcgi/uwsgi/scgi.
compile_nginx() {
  local src="$WORK/$1/nginx-$VERSION"
  mkdir -p "$WORK/$1/staticlibs"
  tar -xzf "$NGINX_TGZ" -C "$WORK/$1"
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
  if grep -Eq 'NEEDED.*lib(ssl|crypto)' <<<"$(readelf -d "$1")"; then die "$1 links libssl dynamically"; fi
}

install_variant() {  # $1 variant, $2 built binary, $3 description for openssl.txt (nosym only)
  mkdir -p "$OUT/$1"
  rm -f "$OUT/$1/.stamp"
  if [ -n "${3:-}" ]; then
    cp "$2" "$OUT/$1/nginx.unstripped.new"
    mv "$OUT/$1/nginx.unstripped.new" "$OUT/$1/nginx.unstripped"
    printf '%s\n' "$3" >"$OUT/$1/openssl.txt"
  fi
  strip "$2"
  check_static "$2"
  cp "$2" "$OUT/$1/nginx.new"
  mv "$OUT/$1/nginx.new" "$OUT/$1/nginx"
  echo "$WANT" >"$OUT/$1/.stamp"
  log "$1: $OUT/$1/nginx ($(stat -c %s "$OUT/$1/nginx") bytes)"
}

relink_nosym() {  # $1 variant, $2 description: the same objects, nothing exported
  printf '{ local: *; };\n' >"$WORK/local.map"
  sed -i "s|-Wl,-E|-Wl,--version-script=$WORK/local.map -Wl,--exclude-libs,ALL|" objs/Makefile
  rm -f objs/nginx
  make -f objs/Makefile objs/nginx >>"$WORK/make.log" 2>&1 || { tail -30 "$WORK/make.log" >&2; die "relink failed"; }
  if grep -Eq ' (ngx_|SSL_)' <<<"$(readelf --dyn-syms -W objs/nginx | awk '$7 != "UND"')"; then
    die "$1 still exports ngx_*/SSL_* symbols"
  fi
  grep -q ' .symtab ' <<<"$(readelf -S -W objs/nginx)" || die "$1: the unstripped link has no .symtab"
  install_variant "$1" objs/nginx "$2"
}

# `cmd | grep -q` under pipefail fails when grep exits at its match before cmd has written
# everything (cmd dies of SIGPIPE): CI once died here with the right version in the output.
# So a command's whole output is taken first, then searched.
built_with() {  # $1 nginx binary, $2 expected "OpenSSL x.y.z" prefix
  local v
  v=$("$1" -V 2>&1)
  grep -q "built with $2" <<<"$v" || die "$1: not built with $2 ($(grep -o 'built with [^(]*' <<<"$v"))"
}

# -- the installed libssl-dev ----------------------------------------------------------------
INSTALLED=$(dpkg-query -W -f='${Version}' libssl-dev)
compile_nginx openssl-installed "$LIBDIR" ""
cp objs/nginx "$WORK/nginx.static-ssl"
install_variant static-ssl "$WORK/nginx.static-ssl"
relink_nosym static-ssl-nosym "Debian 12 libssl-dev $INSTALLED (installed; Debian's flags)"

# -- OpenSSL 1.1.1: headers and archives from Debian 11's libssl-dev, unpacked (not installed)
mkdir -p "$WORK/deb111"
V111=$(cd "$WORK/deb111" && download_deb libssl-dev "$OLD_SSL_SUITE_VERSION") \
  || { tail -5 "$WORK/apt.log" >&2; die "no Debian 11 libssl-dev (1.1.1) downloads"; }
dpkg-deb -x "$WORK"/deb111/libssl-dev_*.deb "$WORK/deb111/root"
inc="$WORK/deb111/root/usr/include"
compile_nginx openssl111 "$WORK/deb111/root/usr/lib/x86_64-linux-gnu" "-I$inc/x86_64-linux-gnu -I$inc"
built_with "$WORK/openssl111/nginx-$VERSION/objs/nginx" "OpenSSL 1.1.1"
relink_nosym static-ssl111-nosym "Debian 11 libssl-dev $V111 (Debian's flags)"

# -- OpenSSL 3 libssl.a compiled here, with Debian's libcrypto.a of the same version ----------
# The newest source version whose source and libssl-dev .deb both download.
mkdir -p "$WORK/ossl"
V3=""
for v in $(src_versions openssl); do
  case $v in 3.*) ;; *) continue ;; esac
  rm -rf "${WORK:?}"/ossl/*
  if (cd "$WORK/ossl" && apt_private source "openssl=$v" >>"$WORK/apt.log" 2>&1 \
        && apt_private download "libssl-dev=$v" >>"$WORK/apt.log" 2>&1); then
    V3=$v; break
  fi
done
[ -n "$V3" ] || { tail -5 "$WORK/apt.log" >&2; die "no openssl 3 source + libssl-dev pair downloads"; }
dpkg-deb -x "$WORK"/ossl/libssl-dev_*.deb "$WORK/ossl/root"
SRC=$(find "$WORK/ossl" -mindepth 1 -maxdepth 1 -type d -name 'openssl-*' | head -1)
[ -x "$SRC/Configure" ] || die "openssl $V3: no source tree"
inc="$WORK/ossl/root/usr/include"
mkdir -p "$WORK/ossl/libs"
ln -s "$WORK/ossl/root/usr/lib/x86_64-linux-gnu/libcrypto.a" "$WORK/ossl/libs/libcrypto.a"
for flavour in "${OPENSSL3_FLAVOURS[@]}"; do
  name=${flavour%%:*} rest=${flavour#*:}
  dir=${rest%%:*} cflags=${rest#*:}
  b="$SRC/$dir"
  mkdir -p "$b"
  log "openssl $V3: libssl.a with $cflags (in $dir)"
  (cd "$b" && CFLAGS="$cflags" "$SRC/Configure" no-shared "${DEBIAN_CONFARGS[@]}" linux-x86_64 \
      && make build_generated && make -j2 libssl.a) >"$WORK/openssl-$name.log" 2>&1 \
    || { tail -20 "$WORK/openssl-$name.log" >&2; die "openssl $V3 libssl.a ($cflags) failed"; }
  cp "$b/libssl.a" "$WORK/ossl/libssl-$name.a"
  ln -sfn "$WORK/ossl/libssl-$name.a" "$WORK/ossl/libs/libssl.a"
  if ! [ -d "$WORK/nginx-ssl3" ]; then  # nginx's objects once (same headers), linked per libssl.a
    compile_nginx nginx-ssl3 "$WORK/ossl/libs" "-I$inc/x86_64-linux-gnu -I$inc"
    built_with objs/nginx "OpenSSL ${V3%%-*}"
  fi
  cd "$WORK/nginx-ssl3/nginx-$VERSION"
  relink_nosym "static-ssl3-$name-nosym" \
    "OpenSSL $V3 (Debian 12 source): libssl.a built here with $cflags (build dir $dir), Debian's libcrypto.a"
done

log "done in $(( $(date +%s) - started ))s"
