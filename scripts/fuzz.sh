#!/bin/sh
# Runs each fuzz target briefly, one after the other:
#
#	sh scripts/fuzz.sh [TIME]
#
# TIME is per target, as for go test -fuzztime (default 10s; "1m" or
# "5000x" work too). Each target runs with -parallel 1, one fuzzing worker,
# so the machine's other cores stay free. It prints one line per target and
# stops at the first failure with go test's output, which names the failing
# input it saved under the package's testdata/fuzz/FuzzNAME/: commit that
# file with the fix, so the input stays a regression test.
set -eu
cd "$(dirname "$0")/.."
t="${1:-10s}"

targets="
./template:FuzzLoad
./template:FuzzLoadFleet
./cloudinit:FuzzMergeUserData
./fetch:FuzzParseSumsList
./images:FuzzParseRef
./images:FuzzReadManifest
"

out=$(mktemp)
trap 'rm -f "$out"' EXIT

for target in $targets; do
	pkg=${target%%:*}
	fuzz=${target#*:}
	start=$(date +%s)
	if go test -run '^$' -fuzz "^$fuzz\$" -fuzztime "$t" -parallel 1 "$pkg" >"$out" 2>&1; then
		execs=$(grep -o 'execs: [0-9]*' "$out" | tail -n 1 | cut -d' ' -f2)
		printf 'ok    %-11s %-18s %4ss  %s execs\n' "$pkg" "$fuzz" "$(($(date +%s) - start))" "${execs:-?}"
	else
		printf 'FAIL  %-11s %-18s %4ss\n' "$pkg" "$fuzz" "$(($(date +%s) - start))"
		cat "$out"
		exit 1
	fi
done
