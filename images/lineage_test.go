package images

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// render draws a forest as "a:1(b:1(c:1),b:2) d:1".
func render(nodes []*Node) string {
	var parts []string
	for _, n := range nodes {
		s := n.Ref().String()
		if len(n.Children) > 0 {
			s += "(" + strings.ReplaceAll(render(n.Children), " ", ",") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func refStrings(refs []Ref) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.String())
	}
	return out
}

func TestTreeAndChildren(t *testing.T) {
	s := newStore(t)
	deb := addFake(t, s, "debian:12", nil)
	web1 := addFake(t, s, "web:1.10", &deb)
	addFake(t, s, "web:1.9", &deb)
	addFake(t, s, "web:1.10-hotfix", &web1)
	// Built from debian:12 but flattened: a Parent without a backing blob.
	addFake(t, s, "api:1", nil, func(m *Manifest) { m.Parent = &Parent{Ref: "debian:12", Digest: deb.Digest} })
	// Its parent was removed: a root.
	gone := addFake(t, s, "gone:1", nil)
	addFake(t, s, "orphan:1", nil, func(m *Manifest) { m.Parent = &Parent{Ref: "gone:1", Digest: gone.Digest} })
	if err := s.Remove(gone.Ref()); err != nil {
		t.Fatal(err)
	}
	// Its parent was replaced with --force (same ref, other digest): a root.
	addFake(t, s, "stale:1", nil, func(m *Manifest) { m.Parent = &Parent{Ref: "debian:12", Digest: testDigest} })
	addFake(t, s, "solo:1", nil)

	roots, err := s.Tree()
	if err != nil {
		t.Fatal(err)
	}
	want := "debian:12(api:1,web:1.9,web:1.10(web:1.10-hotfix)) orphan:1 solo:1 stale:1"
	if got := render(roots); got != want {
		t.Errorf("Tree = %s\n  want %s", got, want)
	}

	tests := []struct {
		ref     string
		want    []string
		wantErr string
	}{
		{ref: "debian:12", want: []string{"api:1", "web:1.9", "web:1.10"}},
		{ref: "debian", want: []string{"api:1", "web:1.9", "web:1.10"}},
		{ref: "web:1.10", want: []string{"web:1.10-hotfix"}},
		{ref: "web:1.9"},
		{ref: "nope:1", wantErr: "not found"},
	}
	for _, tt := range tests {
		got, err := s.Children(mustParse(t, tt.ref))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Children(%s) error = %v, want %q", tt.ref, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(refStrings(got), tt.want) {
			t.Errorf("Children(%s) = %v, %v; want %v", tt.ref, got, err, tt.want)
		}
	}
}

func TestTreeSharedBlobAndCycles(t *testing.T) {
	s := newStore(t)
	base := addFake(t, s, "a:1", nil)
	// b:1 is the same blob under another name; c:1 is an overlay on that
	// blob and says it was built on b:1: it goes under b:1, but is a child
	// of both for Children.
	src := s.BlobPath(base.Digest)
	if _, err := s.Add(t.Context(), manifestFor("b:1"), src, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	bm, _ := s.Get(Ref{Name: "b", Version: "1"})
	addFake(t, s, "c:1", &bm)
	// x:1 and y:1 claim each other as parents.
	dx := addFake(t, s, "x:1", nil, func(m *Manifest) { m.Parent = &Parent{Ref: "y:1", Digest: testDigest} })
	y := addFake(t, s, "y:1", nil, func(m *Manifest) { m.Parent = &Parent{Ref: "x:1", Digest: dx.Digest} })
	mx := dx
	mx.Parent = &Parent{Ref: "y:1", Digest: y.Digest}
	data, _ := encodeManifest(mx)
	if err := os.WriteFile(s.manifestPath(mx.Ref()), data, 0o644); err != nil {
		t.Fatal(err)
	}

	roots, err := s.Tree()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := render(roots), "a:1 b:1(c:1) x:1(y:1)"; got != want {
		t.Errorf("Tree = %s, want %s", got, want)
	}
	for ref, want := range map[string][]string{"a:1": {"c:1"}, "b:1": {"c:1"}, "x:1": {"y:1"}, "y:1": {"x:1"}} {
		got, err := s.Children(mustParse(t, ref))
		if err != nil || !slices.Equal(refStrings(got), want) {
			t.Errorf("Children(%s) = %v, %v; want %v", ref, got, err, want)
		}
	}
}

func TestBreakCycles(t *testing.T) {
	tests := []struct {
		in, want []int
	}{
		{[]int{-1, 0, 1}, []int{-1, 0, 1}},
		{[]int{1, 0}, []int{-1, 0}},
		{[]int{0}, []int{-1}},
		{[]int{-1, 2, 3, 1, 3}, []int{-1, -1, 3, 1, 3}},
		{[]int{1, 2, 1}, []int{1, -1, 1}},
	}
	for _, tt := range tests {
		got := slices.Clone(tt.in)
		breakCycles(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("breakCycles(%v) = %v, want %v", tt.in, got, tt.want)
		}
		// Every node must reach a root.
		for i := range got {
			j, steps := i, 0
			for j >= 0 && steps <= len(got) {
				j, steps = got[j], steps+1
			}
			if j >= 0 {
				t.Errorf("breakCycles(%v): %d never reaches a root", tt.in, i)
			}
		}
	}
}
