#!/bin/sh
# Runs go test with the given arguments through internal/testsummary, which
# prints the usual results and then every skipped test with its reason (a
# skip must never pass for a pass). -v streams every line, for e2e runs.
# Exits non-zero when any test or package failed.
set -u
verbose=""
if [ "${1:-}" = "-v" ]; then
	verbose="-v"
	shift
fi
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
"${GO:-go}" build -o "$bin/testsummary" ./internal/testsummary || exit 1
"${GO:-go}" test -json "$@" | "$bin/testsummary" $verbose
