#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# The GitHub Action's body (action.yml): runs another repository's scenario files against vdaq
# in QEMU, inside a debian:bookworm container (vdaq's set-up needs Debian 12's packages), with
# /dev/kvm passed through when the runner has it. Inputs come as environment variables:
#   VDAQ_SCENARIOS       scenario files, relative to the workspace (whitespace-separated)
#   VDAQ_NAMES           scenario names or globs to run (empty: all)
#   VDAQ_KERNEL          plain, debug or stock for every boot (empty: each file's own)
#   VDAQ_DEVICE_CONFIG   a vdaq-device TOML file for every boot (empty: each file's own)
#   VDAQ_CACHE_DIR       the build cache, in the workspace (kept by actions/cache)
#   VDAQ_RESULTS_DIR     where TAP, JUnit and the logs go, in the workspace
set -euo pipefail

action=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
workspace=${GITHUB_WORKSPACE:-$PWD}
[ -n "${VDAQ_SCENARIOS:-}" ] || { echo "error: no scenario files given (input 'scenarios')" >&2; exit 2; }

args=()
read -r -a files <<<"${VDAQ_SCENARIOS//$'\n'/ }"
for f in "${files[@]}"; do
  [ -f "$workspace/$f" ] || { echo "error: no scenario file $f in the workspace" >&2; exit 2; }
  args+=(--file "/work/$f")
done
[ -z "${VDAQ_KERNEL:-}" ] || args+=(--kernel "$VDAQ_KERNEL")
if [ -n "${VDAQ_DEVICE_CONFIG:-}" ]; then
  [ -f "$workspace/$VDAQ_DEVICE_CONFIG" ] || { echo "error: no device config $VDAQ_DEVICE_CONFIG" >&2; exit 2; }
  args+=(--device-config "/work/$VDAQ_DEVICE_CONFIG")
fi
if [ -n "${VDAQ_NAMES:-}" ]; then
  read -r -a names <<<"${VDAQ_NAMES//$'\n'/ }"
  args+=("${names[@]}")
fi

cache="$workspace/${VDAQ_CACHE_DIR:-.cache/vdaq}"
results="$workspace/${VDAQ_RESULTS_DIR:-vdaq-results}"
mkdir -p "$cache/vdaq" "$cache/cargo" "$results"
kvm=()
if [ -e /dev/kvm ]; then
  kvm=(--device /dev/kvm)
  echo "KVM: passed through (vdaq probes it and falls back to TCG)"
else
  echo "KVM: none on this runner, the guests run under TCG"
fi
printf -v inner 'apt-get update -qq && apt-get install -y -qq --no-install-recommends ca-certificates git >/dev/null && git config --global --add safe.directory /vdaq && /vdaq/ci/setup.sh demo && python3 /vdaq/ci/e2e.py'
for a in "${args[@]}"; do
  printf -v inner '%s %q' "$inner" "$a"
done
status=0
docker run --rm "${kvm[@]}" \
  -v "$action:/vdaq" -v "$workspace:/work" -w /work \
  -v "$cache/vdaq:/root/.cache/vdaq" -v "$cache/cargo:/root/.cargo" \
  -e VDAQ_RUN_DIR=/work/"${VDAQ_RESULTS_DIR:-vdaq-results}" \
  debian:bookworm bash -c "$inner" || status=$?
# The container ran as root: give the files back to the runner's user.
sudo chown -R "$(id -u):$(id -g)" "$cache" "$results" 2>/dev/null || true
exit "$status"
