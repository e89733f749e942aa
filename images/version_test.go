package images

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.0", 0},
		{"1.9", "1.10", -1},
		{"1.10", "1.9", 1},
		{"2", "10", -1},
		{"01", "1", 0},
		{"1.0", "1.0.0", -1},
		{"1.0.0-rc1", "1.0.0", -1},
		{"1.0.0-rc2", "1.0.0-rc10", -1},
		{"1.0.0-alpha", "1.0.0-beta", -1},
		{"1.0.0-alpha", "1.0.0-alpha.1", -1},
		{"1.0.0", "1.0.0-1", -1},
		{"1.0.0-1", "1.0.1", -1},
		{"1.0.0+build.5", "1.0.0+build.6", 0},
		{"1.0.0+zzz", "1.0.1", -1},
		{"2024.01.15", "2024.02.01", -1},
		{"20240115", "20240201", -1},
		{"12345678901234567890123", "12345678901234567890124", -1},
		{"v1.2", "v1.10", -1},
		{"1.0", "1-0", 0},
		{"a", "b", -1},
		{"", "1", -1},
	}
	for _, tt := range tests {
		if got := CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := CompareVersions(tt.b, tt.a); got != -tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

// TestCompareVersionsSorts checks that the order is consistent (transitive)
// by sorting shuffled inputs to one expected order.
func TestCompareVersionsSorts(t *testing.T) {
	want := []string{"0.9", "1.0-alpha", "1.0-alpha.1", "1.0-beta", "1.0-rc1", "1.0-rc2", "1.0-rc10", "1.0", "1.0-1", "1.1", "1.2", "1.10", "2", "10"}
	for i := range 50 {
		got := slices.Clone(want)
		r := rand.New(rand.NewPCG(uint64(i), 1))
		r.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
		slices.SortStableFunc(got, CompareVersions)
		if !slices.Equal(got, want) {
			t.Fatalf("sorted %v, want %v", got, want)
		}
	}
}
