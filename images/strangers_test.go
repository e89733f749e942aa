package images

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestStrangersInTheStore: FIFOs and device nodes in the store's folders
// are skipped, never opened, so nothing that reads the store blocks.
func TestStrangersInTheStore(t *testing.T) {
	s := newStore(t)
	m := addFake(t, s, "hello:1.0.0", nil)
	if err := s.Tag(m.Ref(), "stable"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		filepath.Join(s.Root, "manifests", "hello", "2.0.0.json"),
		filepath.Join(s.Root, "channels", "hello", "beta.json"),
		s.revokedPath(m.Ref()),
	} {
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		list, err := s.List()
		if err != nil || len(list) != 1 {
			t.Errorf("List = %v, %v; want hello:1.0.0 alone", list, err)
		}
		if got, err := s.Resolve(Ref{Name: "hello"}); err != nil || got.Version != "1.0.0" {
			t.Errorf("Resolve = %v, %v", got, err)
		}
		if _, err := s.Get(Ref{Name: "hello", Version: "2.0.0"}); err == nil {
			t.Error("Get of a FIFO manifest: want an error")
		}
		if chans, err := s.Channels("hello"); err != nil || len(chans) != 1 {
			t.Errorf("Channels = %v, %v", chans, err)
		}
		// An unreadable revocation record counts as revoked.
		if _, revoked := s.Revoked(m.Ref()); !revoked {
			t.Error("a FIFO revocation record: want revoked (when in doubt, not used)")
		}
		if res := s.VerifyAll(context.Background()); len(res) != 1 {
			t.Errorf("VerifyAll = %v", res)
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("reading the store blocks on a FIFO")
	}
}
