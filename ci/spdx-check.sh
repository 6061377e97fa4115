#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Fails, listing them, when a tracked source file has no SPDX-License-Identifier line first
# (after a shebang). Source files: Rust, shell, Python, TOML, C, YAML, Kbuild and makefiles,
# and the scripts without an extension below. Not checked: JSON, Markdown, patches, lock files,
# SVG, data (fuzz seeds) and the kernel configuration fragments images/kernel/*.config (their
# text is hashed into the guest kernel's cache key: a comment would cost a kernel rebuild); the
# README's "Licence" section covers those.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
while IFS= read -r -d '' f; do
  case "$f" in
    *.rs | *.sh | *.py | *.toml | *.c | *.h | *.yml | *.yaml) ;;
    Kbuild | */Kbuild | Makefile* | */Makefile* | */GNUmakefile) ;;
    images/guest/init | .ci/run) ;;
    *) continue ;;
  esac
  [ -f "$f" ] || continue # deleted in the work tree, not yet in the index
  {
    IFS= read -r line || true
    if [[ "$line" == '#!'* ]]; then
      IFS= read -r line || true
    fi
  } <"$f"
  [[ "$line" == *"SPDX-License-Identifier: "?* ]] || missing+=("$f")
done < <(git ls-files -z)

if [ "${#missing[@]}" -gt 0 ]; then
  printf 'tracked source files without an SPDX-License-Identifier line first (after a shebang): %d\n' \
    "${#missing[@]}"
  printf '  %s\n' "${missing[@]}"
  exit 1
fi
echo "SPDX lines: every tracked source file has one"
