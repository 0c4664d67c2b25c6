#!/usr/bin/env bash
# The test command: build, then run every suite with Node's test runner, one file at a time
# (sandboxes share the machine's two cores; files in parallel would only measure contention).
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build --silent
# The agent's own unit tests (Go, no sandbox) first: a few seconds.
[[ -z ${CORDON_TEST_FILES:-} ]] && bash scripts/build-agent.sh --test
files=$(ls dist/test/*.test.js | sort)
# A test that hangs fails after 15 minutes (naming itself) instead of stalling the whole run.
exec node --test --test-concurrency=1 --test-timeout=900000 --test-reporter=spec ${CORDON_TEST_FILES:-$files}
