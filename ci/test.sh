#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Runs every vdaq test: installs what is missing, checks formatting and lints, runs the unit
# tests, builds the guest images, and runs the end-to-end suites in QEMU. Ends with a
# "N passed, N failed" line; exits non-zero on any failure.
#
#   ci/test.sh
#
# Two guest kernels (built once each, cached): plain, Linux 7.2, and debug, Linux 6.12 with
# KASAN, lockdep and kmemleak. vdaq.ko passes each kernel's own gates (make CLIPPY=1, rustfmt)
# and the driver suite, the lying device and the races on both.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$VDAQ_ROOT"

case "${1:-}" in
  "") ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "usage: ci/test.sh" ;;
esac

passed=0
failed=0
failed_names=()
step_times=()
step() {
  local name=$1 start=$SECONDS
  shift
  say "$name"
  if "$@"; then
    passed=$((passed + 1))
  else
    printf 'FAIL: %s\n' "$name"
    failed=$((failed + 1))
    failed_names+=("$name")
  fi
  step_times+=("$(printf '%6d s  %s' "$((SECONDS - start))" "$name")")
}

shell_lint() {
  shellcheck ci/*.sh images/*.sh .ci/run &&
    shellcheck images/guest/init ci/guest/*.sh &&
    scripts_executable
}

# A script that lost its executable bit fails only where it is run by path, late in a run:
# every tracked file that starts with "#!" is committed as executable.
scripts_executable() {
  local mode path lost=()
  while read -r mode _ _ path; do
    [ "$mode" = 100644 ] && [ "$(head -c 2 -- "$path" | tr -d '\0')" = '#!' ] && lost+=("$path")
  done < <(git ls-files -s)
  if [ "${#lost[@]}" -gt 0 ]; then
    printf 'scripts committed without the executable bit (git update-index --chmod=+x):\n'
    printf '  %s\n' "${lost[@]}"
    return 1
  fi
}

no_leftover_processes() {
  local left
  # Backends, QEMU and helpers all carry a path of the run directory, or the unprivileged
  # device's own (ci/vm.sh).
  left=$(pgrep -af -- "$VDAQ_ROOT/run/|/tmp/vdaq-device\." || true)
  if [ -n "$left" ]; then
    printf 'processes left running:\n%s\n' "$left"
    return 1
  fi
}

say "Set-up (ci/setup.sh test: the demo's needs, the benchmarks' peers, the fuzzer and linters)"
ci/setup.sh test
step_times+=("$(printf '%6d s  %s' "$SECONDS" "set-up (ci/setup.sh test)")")
step "rustfmt" cargo fmt --all --check
step "rustfmt (fuzz targets)" cargo fmt --all --check --manifest-path fuzz/Cargo.toml
step "clippy -D warnings" cargo clippy --quiet --workspace --all-targets -- -D warnings
step "clippy -D warnings (fuzz targets)" \
  cargo clippy --quiet --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
step "shellcheck, executable scripts" shell_lint
step "SPDX licence lines (ci/spdx-check.sh)" ci/spdx-check.sh
step "vdaq.ko on Linux 6.12: make CLIPPY=1 and the kernel's rustfmt (ci/kernel-lint.sh debug)" \
  ci/kernel-lint.sh debug
step "vdaq.ko on Linux 7.2: make CLIPPY=1 and the kernel's rustfmt (ci/kernel-lint.sh plain)" \
  ci/kernel-lint.sh plain
step "actionlint (.github/workflows)" "$ACTIONLINT" -color=false
step "unit tests (cargo test)" cargo test --quiet --workspace
step "fuzzing, 30 s per target (ci/fuzz.sh)" ci/fuzz.sh 30
say "Building vdaq-device and the guest images (plain and debug kernels, cached)"
cargo build --quiet --release -p vdaq-device
images/build-initramfs.sh plain >/dev/null
images/build-initramfs.sh debug >/dev/null
step "end-to-end scenarios in QEMU (ci/e2e.py: arecord conformance on 7.2, vdaq.ko and the app on 6.12 debug, faults)" \
  python3 ci/e2e.py
step "the driver suite, the lying device and the races on Linux 7.2 (ci/e2e.py --kernel plain: driver, lying, races)" \
  python3 ci/e2e.py --kernel plain --file ci/scenarios/driver.toml \
  --file ci/scenarios/lying.toml --file ci/scenarios/races.toml
step "workbench command mode (ci/workbench-test.sh: exit status passed through, nothing left running)" \
  ci/workbench-test.sh
step "benchmark smoke run (ci/bench.py --smoke: outputs produced and well formed)" \
  python3 ci/bench.py --smoke
step "no process left running" no_leftover_processes

# Where the time went, then the failures again at the end, where a truncated log shows them.
printf 'time per step:\n'
printf '%s\n' "${step_times[@]}"
printf '%6d s  in all (set-up included)\n' "$SECONDS"
for name in "${failed_names[@]}"; do
  printf 'FAILED: %s\n' "$name"
done
echo "vdaq tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
