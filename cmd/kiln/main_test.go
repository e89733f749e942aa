package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/supervisor"
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
	got, err := parseForwards([]string{"8080:80", "0:22", "127.0.0.1:8081:81"}, true)
	if err != nil || len(got) != 3 || got[0].HostPort != 8080 || got[0].GuestPort != 80 || got[1].HostPort != 0 ||
		got[2].HostPort != 8081 || got[2].GuestPort != 81 {
		t.Errorf("got %+v, %v", got, err)
	}
	for _, bad := range []string{"80", "a:b", "70000:80", "80:0", "1:2:3", "0.0.0.0:8080:80", ":8080:80"} {
		if _, err := parseForwards([]string{bad}, true); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
	// A fleet's front port is fixed, and its error does not offer HOST 0.
	_, err = parseForwards([]string{"0:8080"}, false)
	if err == nil || !strings.Contains(err.Error(), "must be fixed") || strings.Contains(err.Error(), "HOST 0") {
		t.Errorf("fleet port 0:8080: %v", err)
	}
	if _, err := parseForwards([]string{"0:8080"}, true); err != nil {
		t.Errorf("run port 0:8080: %v", err)
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

func TestHealthFlags(t *testing.T) {
	ports := []supervisor.Port{{Host: 8080, Guest: 80}}
	c, err := (&healthFlags{http: "/healthz", failures: 2}).check(ports)
	if err != nil || c.Kind != fleet.CheckHTTP || c.Port != 80 || c.FailureThreshold != 2 || c.Interval == 0 {
		t.Errorf("http check = %+v, %v", c, err)
	}
	if c, err := (&healthFlags{}).check(ports); c != nil || err != nil {
		t.Errorf("no flags must mean no check: %+v, %v", c, err)
	}
	bad := []healthFlags{
		{http: "/a", tcp: 80},        // two kinds
		{http: "/a"},                 // (with no ports, below)
		{interval: time.Second},      // a setting without a check
		{exec: "true", failures: -1}, // invalid threshold
	}
	for i, h := range bad {
		p := ports
		if i == 1 {
			p = nil
		}
		if _, err := h.check(p); err == nil {
			t.Errorf("%+v was accepted", h)
		}
	}
}

func TestParsePortsNeedsFixedFront(t *testing.T) {
	if _, err := parsePorts([]string{"0:80"}); err == nil {
		t.Error("a fleet front port of 0 was accepted")
	}
	if p, err := parsePorts([]string{"8080:80"}); err != nil || p[0].Host != 8080 || p[0].Guest != 80 {
		t.Errorf("got %+v, %v", p, err)
	}
}
