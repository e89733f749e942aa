package images

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestRevoke(t *testing.T) {
	s := newStore(t)
	m := addFake(t, s, "hello:1.2.0", nil)
	other := addFake(t, s, "hello:1.3.0", nil)
	r := m.Ref()

	if _, ok := s.Revoked(r); ok {
		t.Fatal("revoked before Revoke")
	}
	if err := s.CheckUsable(m, false); err != nil {
		t.Fatalf("CheckUsable before Revoke: %v", err)
	}

	tests := []struct {
		name    string
		ref     Ref
		reason  string
		wantErr string
	}{
		{"no reason", r, "  ", "revoking hello:1.2.0 needs a reason"},
		{"reason too long", r, strings.Repeat("x", maxReasonLen+1), "shorten it"},
		{"no version", Ref{Name: "hello"}, "bad", "refusing to revoke hello without a version; name one, e.g. hello:1.0.0"},
		{"channel", Ref{Name: "hello", Channel: "stable"}, "bad", "without a version"},
		{"missing", Ref{Name: "hello", Version: "9"}, "bad", "image hello:9 not found"},
		{"invalid", Ref{Name: "../x", Version: "1"}, "bad", "invalid image ref"},
		{"ok", r, " CVE-2025-1234 in openssl\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Revoke(tt.ref, tt.reason)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Revoke = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}

	rv, ok := s.Revoked(r)
	if !ok || rv.Reason != "CVE-2025-1234 in openssl" || rv.At.IsZero() {
		t.Errorf("Revoked = %+v, %v", rv, ok)
	}
	err := s.CheckUsable(m, false)
	want := "image hello:1.2.0 is revoked: CVE-2025-1234 in openssl"
	if !errors.Is(err, ErrRevoked) || err.Error() != want {
		t.Errorf("CheckUsable = %v, want %q matching ErrRevoked", err, want)
	}
	if err := s.CheckUsable(m, true); err != nil {
		t.Errorf("CheckUsable(force) = %v", err)
	}
	if err := s.CheckUsable(other, false); err != nil {
		t.Errorf("another version is affected: %v", err)
	}

	// A record that cannot be read counts as revoked.
	if err := os.WriteFile(s.revokedPath(r), []byte("{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if rv, ok := s.Revoked(r); !ok || !strings.Contains(rv.Reason, "cannot be read") {
		t.Errorf("damaged record: Revoked = %+v, %v; want revoked", rv, ok)
	}

	if err := s.Unrevoke(r); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Revoked(r); ok {
		t.Error("still revoked after Unrevoke")
	}
	if err := s.Unrevoke(r); err == nil || err.Error() != "image hello:1.2.0 is not revoked" {
		t.Errorf("second Unrevoke = %v", err)
	}
	if _, err := os.Stat(s.revokedPath(r)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("revocation file left: %v", err)
	}

	// Remove drops the revocation, so a new image under the same version
	// starts clean.
	if err := s.Revoke(r, "bad"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(r); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Revoked(r); ok {
		t.Error("revocation kept after Remove")
	}
}
