package ociimage

import (
	"encoding/json"
	"testing"
)

// FuzzParseArtifact feeds a registry's manifest and config, the outside
// input a pull trusts nothing of, through the checks a pull makes before
// it reads a blob. What they accept must describe each blob of a valid
// chain as contiguous chunks that add up to its size.
func FuzzParseArtifact(f *testing.F) {
	chain := fakeChain()
	man, cfg := manifestFor(&testing.T{}, chain, 2<<20)
	cfgJSON, _ := json.Marshal(cfg)
	f.Add(man, cfgJSON)
	one, cfg1 := manifestFor(&testing.T{}, chain[:1], 8<<20)
	cfg1JSON, _ := json.Marshal(cfg1)
	f.Add(one, cfg1JSON)
	f.Add([]byte(`{"artifactType":"application/vnd.kiln.image.v1"}`), []byte(`{"chain":[]}`))
	f.Fuzz(func(t *testing.T, manJSON, cfgJSON []byte) {
		_, blobs, err := parseManifest(manJSON)
		if err != nil {
			return
		}
		for _, b := range blobs {
			var end int64
			for _, c := range b.chunks {
				if annotatedOffset(c) != end || c.Size <= 0 {
					t.Fatalf("blob %s: chunk at %d, want %d", b.digest, annotatedOffset(c), end)
				}
				end += c.Size
			}
			if end != b.size {
				t.Fatalf("blob %s: chunks add up to %d, not %d", b.digest, end, b.size)
			}
		}
		var c Config
		if json.Unmarshal(cfgJSON, &c) != nil || c.Validate() != nil {
			return
		}
		if err := matchChain(c, blobs); err == nil {
			for i, m := range c.Chain {
				if blobs[i].digest != m.Digest || blobs[i].size != m.FileSize {
					t.Fatal("matchChain accepted a mismatch")
				}
			}
		}
	})
}
