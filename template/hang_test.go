package template

import (
	"testing"
	"time"
)

func TestHangCandidates(t *testing.T) {
	for _, src := range []string{
		"image \"x\" {\n version = 1e99999999\n base { image = \"d\" }\n}\n",
		"image \"x\" {\n version = \"1\"\n cpus = 1e99999999\n base { image = \"d\" }\n}\n",
		"variable \"v\" {\n type = number\n default = 1e999999999\n}\n" + minimal,
		"image \"x\" {\n version = \"1\"\n disk_size = \"1${\"0\"}\"\n base { image = \"d\" }\n}\n",
	} {
		start := time.Now()
		_, _, err := load(t, src, nil, Options{})
		t.Logf("%v %.200v", time.Since(start), err)
	}
}
