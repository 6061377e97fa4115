#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Proves the set-up and the demo on Debian 13 (trixie) without a Debian 13 machine: makes a
# trixie root with debootstrap from Debian's packages (the mirror of this machine's own apt
# sources), copies this checkout into it, and runs `ci/demo.sh SECONDS` there with chroot: the
# set-up installs everything from trixie, then the device, the guest kernel and the guest are
# built and run inside. Takes about half an hour on 2 cores (the guest kernel is built in the
# root). Usage: ci/debian13-demo.sh [SECONDS]; the log is run/debian13-demo.log.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=${1:-3}
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive whole number (got '$seconds')"
[ "$(id -u)" -eq 0 ] || die "debootstrap and chroot need root"
root="$VDAQ_CACHE/debian13-root"
log="$VDAQ_ROOT/run/debian13-demo.log"
mkdir -p "$VDAQ_ROOT/run"

command -v debootstrap >/dev/null || {
  say "Installing debootstrap"
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}
mirror=$(debian_mirror_uri bookworm | head -n 1)
[ -n "$mirror" ] || mirror=$(debian_mirror_uri trixie | head -n 1)
[ -n "$mirror" ] || die "no apt source of this machine names a Debian mirror"
if [ ! -f "$root/.complete" ]; then
  say "debootstrap trixie into $root (from $mirror)"
  rm -rf "$root"
  debootstrap --variant=minbase --include=ca-certificates,git,procps trixie "$root" "$mirror" \
    >"$log.debootstrap" 2>&1 || { tail -n 20 "$log.debootstrap" >&2; die "debootstrap failed"; }
  touch "$root/.complete"
fi
# The guest's Debian apt sources: trixie and its security updates, from the same mirror.
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror trixie main
deb $mirror trixie-updates main
EOF

mounted=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -l "${mounted[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
for m in dev dev/pts proc sys; do
  mkdir -p "$root/$m"
  mount --bind "/$m" "$root/$m"
  mounted+=("$root/$m")
done
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# The root trusts what this machine trusts: its local certificate authorities (a proxy that
# inspects TLS, a company's CA) are added to the root's store before the set-up fetches from
# crates.io.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  say "Adding this machine's local certificate authorities to the root"
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
fi

say "Copying this checkout into the root (/vdaq)"
rm -rf "$root/vdaq"
git -C "$VDAQ_ROOT" archive --format=tar --prefix=vdaq/ HEAD | tar -x -C "$root"

say "ci/demo.sh $seconds in the trixie root (log: $log)"
rc=0
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb \
  ${http_proxy:+http_proxy="$http_proxy"} ${https_proxy:+https_proxy="$https_proxy"} \
  ${no_proxy:+no_proxy="$no_proxy"} VDAQ_ACCEL=tcg bash -c "cd /vdaq && . /etc/os-release && echo \"host: \$PRETTY_NAME\" && ci/demo.sh $seconds" \
  >"$log" 2>&1 || rc=$?
tail -n 25 "$log"
if [ "$rc" -eq 0 ]; then
  say "Debian 13: the demo passed"
else
  say "Debian 13: the demo failed with status $rc (log: $log)"
fi
exit "$rc"
