package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// webServer answers every request with its name; a request to /slow waits
// until release is closed. It stands in for one instance's HTTP service.
func webServer(t *testing.T, name string, release <-chan struct{}) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "%s %s", name, r.Host)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func newTestHTTPFront(t *testing.T, grace time.Duration) *HTTPFront {
	t.Helper()
	f, err := newHTTPFront("127.0.0.1:0", grace, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// fetch GETs path through the front on client and reports the body and
// whether the client reused its connection.
func fetch(t *testing.T, client *http.Client, f *HTTPFront, path string) (body string, reused bool, err error) {
	t.Helper()
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+f.Addr()+path, nil)
	resp, err := client.Do(req)
	if err != nil {
		return "", reused, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return string(b), reused, err
}

func TestHTTPFrontKeepAliveAcrossSwitch(t *testing.T) {
	f := newTestHTTPFront(t, time.Second)
	blue, green := webServer(t, "blue", nil), webServer(t, "green", nil)
	f.SetBackends([]string{blue})
	client := &http.Client{Timeout: 5 * time.Second}
	if body, _, err := fetch(t, client, f, "/"); err != nil || !strings.HasPrefix(body, "blue ") {
		t.Fatalf("before the switch: %q %v", body, err)
	}
	f.SetBackends([]string{green})
	body, reused, err := fetch(t, client, f, "/")
	if err != nil || !strings.HasPrefix(body, "green ") {
		t.Fatalf("after the switch: %q %v", body, err)
	}
	if !reused {
		t.Error("the client's keep-alive connection did not survive the switch")
	}
	if want := "green " + f.Addr(); body != want {
		t.Errorf("the backend saw Host %q, want the client's (%q)", body, want)
	}
	if err := f.Drain(t.Context(), blue); err != nil {
		t.Errorf("Drain of an idle backend: %v", err)
	}
}

func TestHTTPFrontDrainWaitsForRequests(t *testing.T) {
	f := newTestHTTPFront(t, time.Second)
	release := make(chan struct{})
	blue, green := webServer(t, "blue", release), webServer(t, "green", nil)
	f.SetBackends([]string{blue})
	client := &http.Client{Timeout: 10 * time.Second}
	got := make(chan error, 1)
	go func() {
		body, _, err := fetch(t, client, f, "/slow")
		if err == nil && !strings.HasPrefix(body, "blue ") {
			err = fmt.Errorf("slow request answered %q", body)
		}
		got <- err
	}()
	waitFor(t, "the slow request to reach blue", func() bool { return f.Active(blue) == 1 })
	f.SetBackends([]string{green})
	drained := make(chan error, 1)
	go func() { drained <- f.Drain(t.Context(), blue) }()
	select {
	case err := <-drained:
		t.Fatalf("Drain returned with a request in flight: %v", err)
	case <-time.After(30 * time.Millisecond):
	}
	if body, _, err := fetch(t, client, f, "/"); err != nil || !strings.HasPrefix(body, "green ") {
		t.Errorf("a request during the drain: %q %v", body, err)
	}
	close(release)
	if err := <-got; err != nil {
		t.Errorf("the in-flight request: %v", err)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Errorf("Drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return once the request finished")
	}
}

func TestHTTPFrontDrainDeadlineCuts(t *testing.T) {
	f := newTestHTTPFront(t, time.Second)
	blue := webServer(t, "blue", make(chan struct{}))
	f.SetBackends([]string{blue})
	client := &http.Client{Timeout: 10 * time.Second}
	got := make(chan error, 2)
	for range 2 {
		go func() { _, _, err := fetch(t, client, f, "/slow"); got <- err }()
	}
	waitFor(t, "two requests on blue", func() bool { return f.Active(blue) == 2 })
	f.SetBackends(nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	err := f.Drain(ctx, blue)
	var cut *CutError
	if !errors.As(err, &cut) || cut.N != 2 || !strings.Contains(err.Error(), "cut 2 requests to "+blue) {
		t.Fatalf("Drain at its deadline: %v", err)
	}
	for range 2 {
		if err := <-got; err == nil {
			t.Error("a cut request succeeded")
		}
	}
	waitFor(t, "the cut requests to be released", func() bool { return f.Active(blue) == 0 })
}

func TestHTTPFrontFailoverAndGrace(t *testing.T) {
	f := newTestHTTPFront(t, 2*time.Second)
	live := webServer(t, "live", nil)
	f.SetBackends([]string{closedAddr(t), live, closedAddr(t)})
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 6 {
		if body, _, err := fetch(t, client, f, "/"); err != nil || !strings.HasPrefix(body, "live ") {
			t.Fatalf("request %d with two dead backends: %q %v", i, body, err)
		}
	}
	// An empty set holds requests for the grace; a set that appears in it
	// serves them.
	f.SetBackends(nil)
	var answered atomic.Bool
	go func() {
		time.Sleep(100 * time.Millisecond)
		answered.Store(true)
		f.SetBackends([]string{live})
	}()
	if body, _, err := fetch(t, client, f, "/"); err != nil || !answered.Load() || !strings.HasPrefix(body, "live ") {
		t.Errorf("a request while the set was empty: %q %v", body, err)
	}

	short := newTestHTTPFront(t, 50*time.Millisecond)
	if _, _, err := fetch(t, client, short, "/"); err == nil || !strings.Contains(err.Error(), "HTTP 503") {
		t.Errorf("with no backend after the grace: %v, want HTTP 503", err)
	}
}

// resetServer accepts connections and drops them unanswered, as QEMU does
// for a guest whose service is not up yet.
func resetServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetLinger(0) // a reset, not a clean close
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestHTTPFrontRetriesDroppedGets(t *testing.T) {
	f := newTestHTTPFront(t, time.Second)
	live := webServer(t, "live", nil)
	f.SetBackends([]string{resetServer(t), live})
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 4 {
		if body, _, err := fetch(t, client, f, "/"); err != nil || !strings.HasPrefix(body, "live ") {
			t.Fatalf("GET %d with a backend that drops connections: %q %v", i, body, err)
		}
	}
	// A request with a body may have been acted on: it is not sent again.
	failed := 0
	for range 4 {
		resp, err := client.Post("http://"+f.Addr()+"/", "text/plain", strings.NewReader("order 1"))
		if err == nil {
			if resp.StatusCode != 200 {
				failed++
			}
			resp.Body.Close()
		}
	}
	if failed == 0 {
		t.Error("no POST reached the dropping backend; the round-robin should have sent one there")
	}
}
