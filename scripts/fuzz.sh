#!/bin/sh
# Runs every fuzz target briefly: sh scripts/fuzz.sh 10s
set -eu
cd "$(dirname "$0")/.."
t="${1:-10s}"
for pkg in $(go list ./...); do
	for f in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		echo "fuzz $pkg $f"
		go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" "$pkg"
	done
done
