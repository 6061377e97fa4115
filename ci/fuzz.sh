#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Fuzzes vdaq-device with cargo-fuzz (libFuzzer, no sanitizer: stable Rust; the data path's
# one unsafe place is the counter's raw writes into a window of guest memory, bounded by the
# window's length and unit-tested against the reference encoding over split windows): the
# control-request and stream model (fuzz/fuzz_targets/control.rs), guest descriptor chains in a
# split queue (chain.rs) and the whole backend's handle_event over the four queues in guest
# memory, asserting bounded memory and work (backend.rs), each for a bounded time, starting from
# the committed seeds (fuzz/seeds/TARGET, written by fuzz/make_seeds.py) plus what earlier runs
# here found (run/fuzz/corpus/TARGET). A crash, an input that runs for
# more than 10 s (unbounded work) or one that needs more than 2 GiB fails the run and leaves
# its input in run/fuzz/artifacts/TARGET/ (replay: cargo fuzz run -s none TARGET FILE, in fuzz/).
#
#   ci/fuzz.sh [SECONDS_PER_TARGET]     default 30; e.g. ci/fuzz.sh 3600 for a long run
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=${1:-30}
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "usage: $0 [SECONDS_PER_TARGET]"
[ -x "$CARGO_FUZZ" ] || die "no cargo-fuzz at $CARGO_FUZZ: run ci/setup.sh"
PATH="$(dirname "$CARGO_FUZZ"):$PATH"
export PATH
cd "$VDAQ_ROOT/fuzz"
for target in control chain backend; do
  corpus="$VDAQ_ROOT/run/fuzz/corpus/$target"
  artifacts="$VDAQ_ROOT/run/fuzz/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  cp "seeds/$target/"* "$corpus/"
  say "Fuzzing $target for $seconds s"
  cargo fuzz run --sanitizer none "$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts/" \
    -print_final_stats=1 2>&1 |
    grep -E '^(#[0-9]+ *DONE|Done |stat::number_of_executed_units|==[0-9]+==|.*panicked|.*Test unit written)' || true
  for kind in crash timeout oom; do
    if compgen -G "$artifacts/$kind-*" >/dev/null; then
      die "$target: a $kind, input in $artifacts"
    fi
  done
done
