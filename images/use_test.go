package images

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestUse(t *testing.T) {
	s := newStore(t)
	old := addFake(t, s, "hello:1.0.0", nil)
	m := addFake(t, s, "hello:1.1.0", nil)
	bad := addFake(t, s, "broken:1", nil)
	if err := s.Tag(old.Ref(), "stable"); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(m.Ref(), "CVE-1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(s.BlobPath(bad.Digest), 1); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		ref          string
		allowRevoked bool
		want         string // the version, or the error's text
		is           error
	}{
		{"hello@stable", false, "1.0.0", nil},
		{"hello:1.0.0", false, "1.0.0", nil},
		{"hello", false, "image hello:1.1.0 is revoked: CVE-1", ErrRevoked},
		{"hello:1.1.0", true, "1.1.0", nil},
		{"hello:9", false, "image hello:9 not found", ErrNotFound},
		{"Hello!", false, "invalid image ref", ErrInvalidRef},
		{"broken:1", true, "broken:1", nil}, // a damaged blob is refused, allowed or not
	} {
		img, err := s.Use(tt.ref, tt.allowRevoked)
		switch {
		case tt.ref == "broken:1":
			if err == nil {
				t.Errorf("Use(%s): a truncated blob was accepted", tt.ref)
			}
		case tt.is != nil:
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Use(%s) = %v, want %q matching %v", tt.ref, err, tt.want, tt.is)
			}
			if err != nil && strings.Contains(err.Error(), "--") {
				t.Errorf("Use(%s): the error names a flag: %v", tt.ref, err)
			}
		case err != nil:
			t.Errorf("Use(%s): %v", tt.ref, err)
		case img.Version != tt.want || img.Blob != s.BlobPath(img.Digest) || img.Blob == "":
			t.Errorf("Use(%s) = %s (blob %s), want version %s", tt.ref, img.Ref(), img.Blob, tt.want)
		}
	}
}

func TestCheckImageRef(t *testing.T) {
	for s, ok := range map[string]bool{
		"hello:1.0.0": true, "hello@stable": true, "hello": true,
		"registry.example:5000/team/app:1": true,
		"Hello!":                           false, "": false, "../x:1": false,
	} {
		if err := CheckImageRef(s); (err == nil) != ok {
			t.Errorf("CheckImageRef(%q) = %v", s, err)
		}
	}
}
