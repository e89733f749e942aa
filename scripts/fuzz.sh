#!/bin/sh
# Runs each fuzz target briefly, one after the other:
#
#	sh scripts/fuzz.sh [TIME]
#
# TIME is per target, as for go test -fuzztime (default 10s; "1m" or
# "5000x" work too). make test uses a count ("2000x"): a count has no
# wall-clock deadline, and Go 1.26's fuzz coordinator can fail a target
# with a bare "context deadline exceeded" at the end of a timed run
# (go.dev/issue/75804). A timed run that fails that way without writing a
# reproducer is run once more rather than reported as a finding.
# Each target runs with -parallel 1, one fuzzing worker,
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
./cloudinit:FuzzSplitUserData
./fetch:FuzzParseSumsList
./images:FuzzParseRef
./images:FuzzReadManifest
./ociimage:FuzzParseArtifact
"

out=$(mktemp)
trap 'rm -f "$out"' EXIT

# run_target fuzzes one target into $out, retrying once when the only
# failure is the coordinator's deadline race: the message alone and no
# new file under testdata/fuzz.
run_target() {
	corpus="$1/testdata/fuzz/$2"
	before=$(ls "$corpus" 2>/dev/null | wc -l)
	for attempt in 1 2; do
		if go test -run '^$' -fuzz "^$2\$" -fuzztime "$t" -parallel 1 "$1" >"$out" 2>&1; then
			return 0
		fi
		after=$(ls "$corpus" 2>/dev/null | wc -l)
		if [ "$after" != "$before" ] || ! grep -q '^    context deadline exceeded$' "$out"; then
			return 1
		fi
		echo "note  $1 $2: Go's fuzz coordinator hit its deadline race (go.dev/issue/75804); running it again"
	done
	return 1
}

for target in $targets; do
	pkg=${target%%:*}
	fuzz=${target#*:}
	start=$(date +%s)
	if run_target "$pkg" "$fuzz"; then
		execs=$(grep -o 'execs: [0-9]*' "$out" | tail -n 1 | cut -d' ' -f2)
		printf 'ok    %-11s %-18s %4ss  %s execs\n' "$pkg" "$fuzz" "$(($(date +%s) - start))" "${execs:-?}"
	else
		printf 'FAIL  %-11s %-18s %4ss\n' "$pkg" "$fuzz" "$(($(date +%s) - start))"
		cat "$out"
		exit 1
	fi
done
