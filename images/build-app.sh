#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Builds the guest app as a static binary (glibc, crt-static) and prints its path.
set -euo pipefail
# shellcheck source=../ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../ci/lib.sh"

target=x86_64-unknown-linux-gnu
say "Building the guest app (static)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
  --manifest-path "$VDAQ_ROOT/Cargo.toml" -p vdaq-app --target "$target" \
  --target-dir "$VDAQ_ROOT/target/guest"
echo "$VDAQ_ROOT/target/guest/$target/release/vdaq"
