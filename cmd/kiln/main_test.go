package main

import (
	"context"
	"strings"
	"testing"
)

func TestShellJoin(t *testing.T) {
	cases := []struct {
		in   []string
		want string
	}{
		{[]string{"cat /etc/os-release | head -1"}, "cat /etc/os-release | head -1"},
		{[]string{"cat", "/etc/os-release"}, "cat /etc/os-release"},
		{[]string{"echo", "it's here", ""}, `echo 'it'\''s here' ''`},
	}
	for _, c := range cases {
		if got := shellJoin(c.in); got != c.want {
			t.Errorf("shellJoin(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParseForwards(t *testing.T) {
	got, err := parseForwards([]string{"8080:80", "0:22"})
	if err != nil || len(got) != 2 || got[0].HostPort != 8080 || got[0].GuestPort != 80 || got[1].HostPort != 0 {
		t.Errorf("got %+v, %v", got, err)
	}
	for _, bad := range []string{"80", "a:b", "70000:80", "80:0", "1:2:3"} {
		if _, err := parseForwards([]string{bad}); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

func TestExitStatuses(t *testing.T) {
	var stderr strings.Builder
	if code := realMain(context.Background(), []string{"nope"}, &stderr); code != 2 || !strings.Contains(stderr.String(), "unknown command") {
		t.Errorf("unknown command: exit %d, %q", code, stderr.String())
	}
	stderr.Reset()
	if code := realMain(context.Background(), []string{"run"}, &stderr); code != 2 || !strings.Contains(stderr.String(), "give one image") {
		t.Errorf("run without an image: exit %d, %q", code, stderr.String())
	}
	stderr.Reset()
	if code := realMain(context.Background(), []string{"run", "x.qcow2", "--memory", "lots"}, &stderr); code != 2 || !strings.Contains(stderr.String(), "--memory") {
		t.Errorf("bad memory: exit %d, %q", code, stderr.String())
	}
}
