package images

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestRemoveChecked(t *testing.T) {
	tests := []struct {
		name    string
		ref     string
		inUse   map[string]string // "base" stands for hello:1.0.0's digest
		force   bool
		wantErr string
		inUseIs bool // error matches ErrInUse
	}{
		{name: "has children", ref: "hello:1.0.0", wantErr: "hello:1.0.0 is the base of hello:1.1.0, web:1; remove those first", inUseIs: true},
		{name: "has children, forced", ref: "hello:1.0.0", force: true},
		{name: "leaf", ref: "web:1"},
		{name: "in use", ref: "solo:1", inUse: map[string]string{"solo": "fleet web (web-3)"}, wantErr: "solo:1 is in use by fleet web (web-3); stop it first", inUseIs: true},
		{name: "in use, no name", ref: "solo:1", inUse: map[string]string{"solo": ""}, wantErr: "solo:1 is in use by something running", inUseIs: true},
		{name: "in use, forced", ref: "solo:1", inUse: map[string]string{"solo": "fleet web (web-3)"}, force: true},
		{name: "other digest in use", ref: "solo:1", inUse: map[string]string{testDigest: "fleet x"}},
		{name: "missing", ref: "hello:9", wantErr: "image hello:9 not found"},
		{name: "no version", ref: "hello", wantErr: "refusing to remove hello without a version"},
		{name: "channel", ref: "hello@stable", wantErr: "refusing to remove hello@stable without a version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			base := addFake(t, s, "hello:1.0.0", nil)
			addFake(t, s, "hello:1.1.0", &base)
			addFake(t, s, "web:1", nil, func(m *Manifest) { m.Parent = &Parent{Ref: "hello:1.0.0", Digest: base.Digest} })
			solo := addFake(t, s, "solo:1", nil)
			if err := s.Tag(base.Ref(), "stable"); err != nil {
				t.Fatal(err)
			}
			if err := s.Revoke(base.Ref(), "bad"); err != nil {
				t.Fatal(err)
			}
			inUse := map[string]string{}
			for d, who := range tt.inUse {
				if d == "solo" {
					d = solo.Digest
				}
				inUse[d] = who
			}
			r := mustParse(t, tt.ref)
			before := snapshot(t, s.Root)
			err := s.RemoveChecked(r, inUse, tt.force)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("RemoveChecked = %v, want error containing %q", err, tt.wantErr)
				}
				if errors.Is(err, ErrInUse) != tt.inUseIs {
					t.Errorf("errors.Is(%v, ErrInUse) = %v", err, !tt.inUseIs)
				}
				if d := diffSnapshots(before, snapshot(t, s.Root)); d != "" {
					t.Errorf("refused removal changed the store:\n%s", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m, _ := ParseRef(tt.ref)
			if _, err := s.Get(m); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get after RemoveChecked: %v", err)
			}
			if m == base.Ref() {
				if _, err := s.Resolve(Ref{Name: "hello", Channel: "stable"}); !errors.Is(err, ErrNotFound) {
					t.Errorf("channel still resolves: %v", err)
				}
				if _, ok := s.Revoked(m); ok {
					t.Error("revocation kept")
				}
				if _, err := os.Stat(s.BlobPath(base.Digest)); err != nil {
					t.Errorf("blob removed before gc: %v", err)
				}
			}
		})
	}
}

func TestNameRefs(t *testing.T) {
	var refs []Ref
	for i := range 7 {
		refs = append(refs, Ref{Name: "a", Version: fmt.Sprint(i)})
	}
	if got, want := nameRefs(refs[:2]), "a:0, a:1"; got != want {
		t.Errorf("nameRefs = %q, want %q", got, want)
	}
	if got, want := nameRefs(refs), "a:0, a:1, a:2, a:3, a:4, and 2 more"; got != want {
		t.Errorf("nameRefs = %q, want %q", got, want)
	}
}
