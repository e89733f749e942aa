package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:9: needs root to mount a tmpfs\n"}
{"Action":"output","Package":"p","Test":"TestA","Output":"--- SKIP: TestA (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestB"}
{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s\n"}
{"Action":"pass","Package":"p","Elapsed":0.1}
{"Action":"output","Package":"q","Test":"TestC","Output":"    c_test.go:3: boom\n"}
{"Action":"fail","Package":"q","Test":"TestC"}
{"Action":"output","Package":"q","Output":"FAIL\n"}
{"Action":"fail","Package":"q","Elapsed":0.2}
`
	var out bytes.Buffer
	failed, err := summarize(strings.NewReader(in), &out, false)
	if err != nil || !failed {
		t.Fatalf("failed=%v err=%v", failed, err)
	}
	for _, want := range []string{"ok  \tp\t0.100s", "c_test.go:3: boom", "FAIL\tq\t0.200s",
		"skipped (1):\n  p TestA: needs root to mount a tmpfs (a_test.go:9)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
	out.Reset()
	if failed, _ := summarize(strings.NewReader(`{"Action":"pass","Package":"p","Elapsed":1}`+"\n"), &out, false); failed {
		t.Error("a passing run failed")
	}
	if failed, _ := summarize(strings.NewReader("# build output only\n"), &out, true); !failed {
		t.Error("a run with no package result passed")
	}
}
