package libvirthost

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const gib = 1 << 30

func TestPlace(t *testing.T) {
	down := errors.New("unreachable")
	tests := []struct {
		name  string
		cands []Candidate
		n     int
		mem   uint64
		want  []string
		err   string
	}{
		{"spread over two empty hosts", []Candidate{{Name: "a", FreeMemory: 8 * gib}, {Name: "b", FreeMemory: 8 * gib}}, 4, gib,
			[]string{"a", "b", "a", "b"}, ""},
		{"spread beats least used", []Candidate{{Name: "a", Fleet: 0, Total: 5, FreeMemory: 8 * gib}, {Name: "b", Fleet: 1, Total: 1, FreeMemory: 8 * gib}}, 1, gib,
			[]string{"a"}, ""},
		{"least used breaks a spread tie", []Candidate{{Name: "a", Total: 3, FreeMemory: 8 * gib}, {Name: "b", Total: 1, FreeMemory: 8 * gib}}, 2, gib,
			[]string{"b", "a"}, ""},
		{"free memory breaks a use tie", []Candidate{{Name: "a", FreeMemory: 4 * gib}, {Name: "b", FreeMemory: 6 * gib}}, 1, gib,
			[]string{"b"}, ""},
		{"a down host is skipped", []Candidate{{Name: "a", FreeMemory: 8 * gib, Err: down}, {Name: "b", FreeMemory: 8 * gib}}, 2, gib,
			[]string{"b", "b"}, ""},
		{"memory runs out on one host", []Candidate{{Name: "a", FreeMemory: 1 * gib}, {Name: "b", FreeMemory: 8 * gib}}, 3, gib,
			[]string{"b", "a", "b"}, ""},
		{"no host can take any", []Candidate{{Name: "a", FreeMemory: 8 * gib, Err: down}, {Name: "b", FreeMemory: gib / 2}}, 1, gib,
			nil, "placed 0 of 1 instances, no host can take more (a: unreachable; b: 512.0 MiB free, 1.0 GiB needed)"},
		{"no hosts", nil, 1, gib, nil, "no hosts to place instances on"},
		{"zero instances", []Candidate{{Name: "a"}}, 0, gib, []string{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.cands)
			got, err := Place(tt.cands, tt.n, tt.mem)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Place() error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Place() = %v, want %v", got, tt.want)
			}
			if !slices.EqualFunc(in, tt.cands, func(a, b Candidate) bool { return a == b }) {
				t.Errorf("Place changed its input")
			}
		})
	}
}
