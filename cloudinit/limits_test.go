package cloudinit

import (
	"strings"
	"testing"
)

func TestUserDataLimits(t *testing.T) {
	for _, c := range []struct{ name, data, want string }{
		{"too big", "#cloud-config\nruncmd: [\"" + strings.Repeat("x", MaxUserData) + "\"]\n", "more than the 1048576 kiln takes"},
		{"flow nesting", "#cloud-config\na: " + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + "\n", "nests more than 64 levels"},
		{"block nesting", "#cloud-config\n" + blockNest(80), "nests more than 64 levels"},
	} {
		if _, err := ParseUserData([]byte(c.data)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
	}
	if _, err := ParseUserData([]byte("#cloud-config\n" + blockNest(20))); err != nil {
		t.Errorf("20 levels: %v", err)
	}
}

func blockNest(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(strings.Repeat(" ", i) + "k:\n")
	}
	b.WriteString(strings.Repeat(" ", n) + "v: 1\n")
	return b.String()
}
