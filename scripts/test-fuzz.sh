#!/usr/bin/env bash
# The fuzzing harness (docs/fuzzing.md): the bounded fuzz targets
# (tests/fuzz, OPSWIRE_FUZZ_CASES cases x each target's weight), then a short
# pass of the wire fuzzer (examples/wire_fuzz.rs) against the opswire binary,
# in dev mode and in auth mode. Needs only cargo; builds what it runs.
#
# Environment:
#   OPSWIRE_FUZZ_CASES     base cases per target (default: the test's own, 256)
#   OPSWIRE_FUZZ_SEED      seed of both layers (default: drawn, and printed)
#   OPSWIRE_FUZZ_PROFILE   debug (default) or release: the build the wire pass runs
#   WIRE_FUZZ_SECONDS      fuzzing time of each wire pass (default 8)
#   WIRE_FUZZ_ARGS         more wire_fuzz flags, e.g. --no-hardening
#   FUZZ_TARGETS=0         skip the targets (scripts/test.sh's test stage ran them)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (rustup: https://rustup.rs)" >&2
  exit 1
fi

failed=()

if [ "${FUZZ_TARGETS:-1}" != 0 ]; then
  log "fuzz targets (cargo test --test fuzz)"
  cargo test --locked --test fuzz || failed+=("fuzz targets")
fi

profile=${OPSWIRE_FUZZ_PROFILE:-debug}
build=(--locked --bin opswire --example wire_fuzz)
[ "$profile" = release ] && build+=(--release)
log "building opswire and the wire fuzzer ($profile)"
cargo build "${build[@]}"

seed_args=()
[ -n "${OPSWIRE_FUZZ_SEED:-}" ] && seed_args=(--seed "$OPSWIRE_FUZZ_SEED")
for mode in dev auth; do
  log "wire fuzzer: $mode mode, ${WIRE_FUZZ_SECONDS:-8} s"
  # shellcheck disable=SC2086 # WIRE_FUZZ_ARGS is a list of flags
  "target/$profile/examples/wire_fuzz" --binary "target/$profile/opswire" --mode "$mode" \
    --seconds "${WIRE_FUZZ_SECONDS:-8}" "${seed_args[@]}" ${WIRE_FUZZ_ARGS:-} \
    || failed+=("wire fuzzer ($mode)")
done

if ((${#failed[@]})); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "fuzzing passed"
