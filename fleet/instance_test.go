package fleet

import (
	"slices"
	"testing"
)

func TestInstanceHelpers(t *testing.T) {
	a := newFakeInstance("web-1", v1, map[int]string{80: "127.0.0.1:20001", 22: "127.0.0.1:20002"})
	b := newFakeInstance("web-2", v1, map[int]string{22: "127.0.0.1:20003"})
	c := newFakeInstance("web-3", v2, map[int]string{80: "127.0.0.1:20004"})
	tests := []struct {
		name      string
		insts     []Instance
		port      int
		wantIDs   []string
		wantAddrs []string
	}{
		{"none", nil, 80, []string{}, []string{}},
		{"all forward", []Instance{a, c}, 80, []string{"web-1", "web-3"}, []string{"127.0.0.1:20001", "127.0.0.1:20004"}},
		{"one does not forward", []Instance{a, b, c}, 80, []string{"web-1", "web-2", "web-3"}, []string{"127.0.0.1:20001", "127.0.0.1:20004"}},
		{"other port", []Instance{a, b, c}, 22, []string{"web-1", "web-2", "web-3"}, []string{"127.0.0.1:20002", "127.0.0.1:20003"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ids(tc.insts); !slices.Equal(got, tc.wantIDs) {
				t.Errorf("ids = %v, want %v", got, tc.wantIDs)
			}
			if got := addrs(tc.insts, tc.port); !slices.Equal(got, tc.wantAddrs) {
				t.Errorf("addrs = %v, want %v", got, tc.wantAddrs)
			}
		})
	}
}

func TestIsDone(t *testing.T) {
	in := newFakeInstance("web-1", v1, nil)
	if isDone(in) {
		t.Fatal("a running instance is done")
	}
	in.kill()
	in.kill() // idempotent
	if !isDone(in) {
		t.Fatal("a killed instance is not done")
	}
}
