#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# The kernel's own gates for vdaq.ko, as a Rust-for-Linux patch would pass them:
#
#   ci/kernel-lint.sh [VARIANT...]    (plain, debug; default: both)
#
#  - `make CLIPPY=1` with the kernel's clippy lints and -Dwarnings, built by Debian's
#    clippy-driver (rust-web-clippy: the same compiler as the kernel's rustc-web);
#  - rustfmt with the kernel's .rustfmt.toml (Debian's rustfmt-web), over guest-driver/ (the
#    shared definitions in proto/src/ are the workspace's, formatted by cargo fmt, and marked
#    #[rustfmt::skip] where the driver includes them).
#
# Against the cached kernel of each variant: Linux 6.12 (debug) and 7.2 (plain) differ in
# their clippy settings (7.2 denies more) and vdaq.ko's FFI layer differs between them.
# `ci/setup.sh test` installs the tools. Exits non-zero, with the findings, when a gate fails.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Debian's, of the kernel's rustc-web release (PATH's may be rustup's).
KERNEL_CLIPPY_DRIVER=/usr/bin/clippy-driver
KERNEL_RUSTFMT=/usr/bin/rustfmt
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(debug plain)
for tool in "$KERNEL_CLIPPY_DRIVER" "$KERNEL_RUSTFMT"; do
  [ -x "$tool" ] || die "$tool is missing: run ci/setup.sh test (rust-web-clippy, rustfmt-web)"
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mapfile -t make_vars < <(kernel_make_vars)

# Both gates against the kernel of variant $1, in a copy of the sources of its own.
lint_variant() {
  local variant=$1 kernel_dir dir log status=0
  kernel_dir=$("$VDAQ_ROOT/images/build-kernel.sh" "$variant")
  dir="$work/$variant"
  copy_driver_sources "$dir"

  say "make CLIPPY=1 (clippy $("$KERNEL_CLIPPY_DRIVER" --version | cut -d' ' -f2), -Dwarnings) for the $variant kernel"
  log="$dir/clippy.log"
  if ! make -s -C "$kernel_dir" "${make_vars[@]}" CLIPPY=1 CLIPPY_DRIVER="$KERNEL_CLIPPY_DRIVER" \
    KRUSTFLAGS=-Dwarnings M="$dir/guest-driver" modules >"$log" 2>&1 ||
    grep -qiE 'warning|error' "$log"; then
    cat "$log" >&2
    printf 'FAIL: vdaq.ko has clippy findings (%s kernel)\n' "$variant" >&2
    status=1
  else
    note "no clippy finding"
  fi

  say "rustfmt --check with the $variant kernel's .rustfmt.toml ($("$KERNEL_RUSTFMT" --version))"
  # rustfmt follows the driver's modules from its root file.
  if ! "$KERNEL_RUSTFMT" --edition 2021 --config-path "$kernel_dir/source/.rustfmt.toml" \
    --check "$VDAQ_ROOT/guest-driver/vdaq.rs"; then
    printf 'FAIL: guest-driver/ is not formatted as the kernel formats it: run %s\n' \
      "$KERNEL_RUSTFMT --edition 2021 --config-path $kernel_dir/source/.rustfmt.toml guest-driver/vdaq.rs" >&2
    status=1
  else
    note "formatted as the kernel's rustfmt settings say"
  fi
  return "$status"
}

status=0
for variant in "${variants[@]}"; do
  lint_variant "$variant" || status=1
done
exit "$status"
