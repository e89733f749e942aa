package fleet

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// benchEchoBackend serves 127.0.0.1:0, copying what each connection sends
// back to it until the client half-closes or closes. It stands in for an
// instance with as little work of its own as possible, so the balancer's
// share dominates.
func benchEchoBackend(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	return ln.Addr().String()
}

// BenchmarkBalancerHandoff measures one client connection through the load
// balancer: accept on the front, pick a backend, dial it, proxy a small
// request and its echo both ways, and tear both connections down. It is the
// cost kiln adds to every request a fleet serves.
func BenchmarkBalancerHandoff(b *testing.B) {
	backend := benchEchoBackend(b)
	lb, err := NewBalancer("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer lb.Close()
	lb.SetBackends([]string{backend})
	front := lb.Addr()
	msg := []byte("GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
	buf := make([]byte, len(msg))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c, err := net.Dial("tcp", front)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(buf, msg) {
			b.Fatalf("echo %q, want %q", buf, msg)
		}
		c.Close()
	}
}

// BenchmarkHTTPFrontRequest measures one request through the HTTP front on
// a client connection kept alive across requests: parse it, pick a
// backend, send it on a pooled backend connection, copy the answer back.
func BenchmarkHTTPFrontRequest(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from bench\n")
	}))
	defer srv.Close()
	f, err := NewHTTPFront("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	f.SetBackends([]string{strings.TrimPrefix(srv.URL, "http://")})
	client := &http.Client{}
	url := "http://" + f.Addr() + "/"
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "hello from bench\n" {
			b.Fatalf("%q %v", body, err)
		}
	}
}
