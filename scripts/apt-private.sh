#!/usr/bin/env bash
# apt-get with a private configuration under $APT_DIR (default /var/cache/ngxscope/apt):
# the machine's own Debian archive entries (URIs, Signed-By keyrings, read from
# /etc/apt/sources.list and /etc/apt/sources.list.d/*.{list,sources} at run time) with
# deb-src added, plus Debian 11 (bullseye) binaries on the main archive URI, for
# scripts/build-nginx-static.sh. The system's apt configuration is never changed, so none
# of these become install candidates; apt verifies every download against the keyrings.
#
#   scripts/apt-private.sh update                  # refresh the private lists (idempotent)
#   scripts/apt-private.sh source -d openssl       # any apt-get command, private config
#   scripts/apt-private.sh cache policy libssl-dev # any apt-cache command, likewise
#   scripts/apt-private.sh sources                 # only write and print the private sources
#
# NGXSCOPE_APT_ETC and NGXSCOPE_OS_RELEASE replace /etc/apt and /etc/os-release (tests).
#
# Refuses (one line, exit 1) when no signed Debian entry is configured.
set -euo pipefail

APT_DIR=${NGXSCOPE_APT:-/var/cache/ngxscope/apt}
ETC=${NGXSCOPE_APT_ETC:-/etc/apt}
OS_RELEASE=${NGXSCOPE_OS_RELEASE:-/etc/os-release}
OLD_SUITE=bullseye  # Debian 11: OpenSSL 1.1.1

die() { printf 'apt-private: %s\n' "$*" >&2; exit 1; }

# One line per configured entry: "type uri suite components... | signed-by" (deb822 stanzas
# and one-line entries alike; options other than signed-by are not carried over).
system_entries() {
  local f
  for f in "$ETC/sources.list" "$ETC"/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -e 's/#.*//' "$f" | awk '
      $1 != "deb" && $1 != "deb-src" { next }
      { signed = ""; i = 2
        if ($2 ~ /^\[/) {
          for (; i <= NF; i++) {
            opt = $i; gsub(/[][]/, "", opt)
            if (opt ~ /^signed-by=/) { signed = substr(opt, 11) }
            if ($i ~ /\]$/) { i++; break }
          }
        }
        line = $1; for (; i <= NF; i++) line = line " " $i
        print line " | " signed }'
  done
  for f in "$ETC"/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush() {
        if (types != "" && uris != "" && suites != "" && enabled != "no") {
          nt = split(types, T, " "); nu = split(uris, U, " "); ns = split(suites, S, " ")
          for (a = 1; a <= nt; a++) for (b = 1; b <= nu; b++) for (c = 1; c <= ns; c++)
            print T[a] " " U[b] " " S[c] " " comps " | " signed
        }
        types = uris = suites = comps = signed = enabled = ""; key = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[A-Za-z-]+:/ {
        key = tolower(substr($0, 1, index($0, ":") - 1)); val = substr($0, index($0, ":") + 1)
        gsub(/^[ \t]+|[ \t]+$/, "", val)
        if (key == "types") types = val; else if (key == "uris") uris = val
        else if (key == "suites") suites = val; else if (key == "components") comps = val
        else if (key == "signed-by") signed = val; else if (key == "enabled") enabled = tolower(val)
        next
      }
      END { flush() }' "$f"
  done
}

write_sources() {
  local codename entries out="$APT_DIR/sources.list.new" n=0
  codename=$(. "$OS_RELEASE" && echo "${VERSION_CODENAME:-}")
  [ -n "$codename" ] || die "no VERSION_CODENAME in $OS_RELEASE"
  entries=$(system_entries | awk '$1 == "deb"' | sort -u)
  [ -n "$entries" ] || die "no 'deb' entry in the system's apt sources"
  : >"$out"
  while IFS= read -r e; do
    local spec=${e% | *} signed=${e##* | } type uri suite comps opt=""
    read -r type uri suite comps <<<"$spec"
    case $suite in "$codename"|"$codename"-*) ;; *) continue ;; esac
    [ -n "$signed" ] && [ -f "$signed" ] || continue  # only entries apt can verify by a keyring file
    opt="[signed-by=$signed]"
    printf 'deb %s %s %s %s\ndeb-src %s %s %s %s\n' "$opt" "$uri" "$suite" "$comps" \
      "$opt" "$uri" "$suite" "$comps" >>"$out"
    n=$((n + 1))
    if [ "$suite" = "$codename" ]; then  # the main archive: Debian 11 is there too
      printf 'deb %s %s %s main\n' "$opt" "$uri" "$OLD_SUITE" >>"$out"
    fi
  done <<<"$entries"
  [ "$n" -gt 0 ] || die "no signed $codename entry in the system's apt sources"
  mv "$out" "$APT_DIR/sources.list"
}

mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
OPTS=(-o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
      -o "APT::Sandbox::User=root" -q)

if [ "${1:-}" = sources ]; then
  write_sources
  cat "$APT_DIR/sources.list"
  exit 0
fi
if [ "${1:-}" = update ]; then
  write_sources
  apt-get "${OPTS[@]}" update >"$APT_DIR/update.log" 2>&1 \
    || { tail -5 "$APT_DIR/update.log" >&2; die "apt-get update failed (log: $APT_DIR/update.log)"; }
  exit 0
fi
[ -f "$APT_DIR/sources.list" ] || die "run '$0 update' first"
if [ "${1:-}" = cache ]; then shift; exec apt-cache "${OPTS[@]}" "$@"; fi
exec apt-get "${OPTS[@]}" "$@"
