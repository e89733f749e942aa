package cloudinit

import (
	"path/filepath"
	"testing"
)

// BenchmarkWriteISO measures a whole seed: user-data merge, YAML and ISO.
func BenchmarkWriteISO(b *testing.B) {
	hk, err := NewHostKey()
	if err != nil {
		b.Fatal(err)
	}
	c := Config{
		InstanceID: NewInstanceID(), Hostname: "bench", User: "kiln",
		AuthorizedKeys: []string{hk.Public}, HostKeys: []HostKey{hk},
		UserData: []byte("#cloud-config\npackages: [jq]\nruncmd: [echo hi]\n"),
	}
	path := filepath.Join(b.TempDir(), "seed.iso")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := WriteISO(path, c); err != nil {
			b.Fatal(err)
		}
	}
}
