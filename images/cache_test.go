package images

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindByFingerprint(t *testing.T) {
	fp := func(f string) func(*Manifest) { return func(m *Manifest) { m.Fingerprint = f } }
	tests := []struct {
		name    string
		setup   func(t *testing.T, s *Store)
		fp      string
		want    string // ref, "" for a miss
		wantErr string
	}{
		{name: "empty store", fp: "sha256:aa"},
		{name: "empty fingerprint", fp: "", wantErr: "empty build fingerprint"},
		{name: "one hit", fp: "sha256:aa", want: "hello:1", setup: func(t *testing.T, s *Store) {
			addFake(t, s, "hello:1", nil, fp("sha256:aa"))
			addFake(t, s, "hello:2", nil, fp("sha256:bb"))
			addFake(t, s, "hello:3", nil)
		}},
		{name: "newest build wins, across names", fp: "sha256:aa", want: "other:1", setup: func(t *testing.T, s *Store) {
			addFake(t, s, "hello:9", nil, fp("sha256:aa"), at(1))
			addFake(t, s, "other:1", nil, fp("sha256:aa"), at(3))
			addFake(t, s, "hello:1", nil, fp("sha256:aa"), at(2))
		}},
		{name: "revoked skipped", fp: "sha256:aa", want: "hello:1", setup: func(t *testing.T, s *Store) {
			addFake(t, s, "hello:1", nil, fp("sha256:aa"), at(1))
			addFake(t, s, "hello:2", nil, fp("sha256:aa"), at(2))
			if err := s.Revoke(Ref{Name: "hello", Version: "2"}, "broken"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "all revoked", fp: "sha256:aa", setup: func(t *testing.T, s *Store) {
			addFake(t, s, "hello:1", nil, fp("sha256:aa"))
			if err := s.Revoke(Ref{Name: "hello", Version: "1"}, "broken"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "missing blob skipped", fp: "sha256:aa", want: "hello:1", setup: func(t *testing.T, s *Store) {
			addFake(t, s, "hello:1", nil, fp("sha256:aa"), at(1))
			m := addFake(t, s, "hello:2", nil, fp("sha256:aa"), at(2))
			os.Remove(s.BlobPath(m.Digest))
		}},
		{name: "removed image not found", fp: "sha256:aa", setup: func(t *testing.T, s *Store) {
			m := addFake(t, s, "hello:1", nil, fp("sha256:aa"))
			if err := s.Remove(m.Ref()); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "damage elsewhere is not an error", fp: "sha256:aa", want: "hello:1", setup: func(t *testing.T, s *Store) {
			addFake(t, s, "hello:1", nil, fp("sha256:aa"))
			bad := filepath.Join(s.Root, "manifests", "bad")
			os.Mkdir(bad, 0o700)
			writeFile(t, filepath.Join(bad, "1.json"), "{not json")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			if tt.setup != nil {
				tt.setup(t, s)
			}
			m, ok, err := s.FindByFingerprint(tt.fp)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := ""; ok {
				got = m.Ref().String()
				if got != tt.want || m.Fingerprint != tt.fp {
					t.Errorf("FindByFingerprint = %s (%q), want %q", got, m.Fingerprint, tt.want)
				}
			} else if tt.want != "" {
				t.Errorf("FindByFingerprint missed, want %s", tt.want)
			}
		})
	}
}
