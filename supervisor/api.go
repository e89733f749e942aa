package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/images"
)

// listenAPI serves the CLI on the fleet's unix socket (0600 in a 0700
// folder: only the fleet's owner may steer it).
func (s *Supervisor) listenAPI() (io.Closer, error) {
	os.Remove(s.dirs.Socket())
	ln, err := net.Listen("unix", s.dirs.Socket())
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", s.dirs.Socket(), err)
	}
	os.Chmod(s.dirs.Socket(), 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		st := s.state
		s.mu.Unlock()
		writeJSONResponse(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /rollout", func(w http.ResponseWriter, r *http.Request) {
		var req RolloutRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		id, err := s.startRollout(req)
		if err != nil {
			writeError(w, http.StatusConflict, err)
			return
		}
		writeJSONResponse(w, http.StatusOK, map[string]int{"id": id})
	})
	mux.HandleFunc("POST /promote", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		ro := s.rollout
		s.mu.Unlock()
		if ro == nil {
			writeError(w, http.StatusConflict, errors.New("no rollout is running"))
			return
		}
		if err := ro.Promote(); err != nil {
			writeError(w, http.StatusConflict, err)
			return
		}
		writeJSONResponse(w, http.StatusOK, map[string]bool{"ok": true})
	})
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, r *http.Request) {
		writeJSONResponse(w, http.StatusOK, map[string]bool{"ok": true})
		// The answer must reach the CLI before stopping closes the socket,
		// or the CLI takes the lost answer for a dead supervisor.
		http.NewResponseController(w).Flush()
		go s.stop()
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

func writeJSONResponse(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// errorKinds are the store's refusals an API error keeps across the socket,
// so the CLI can tell them apart (and say which flag overrides them).
var errorKinds = map[string]error{"revoked": images.ErrRevoked, "exists": images.ErrExists, "in-use": images.ErrInUse}

func writeError(w http.ResponseWriter, code int, err error) {
	body := map[string]string{"error": err.Error()}
	for name, kind := range errorKinds {
		if errors.Is(err, kind) {
			body["kind"] = name
		}
	}
	writeJSONResponse(w, code, body)
}

// apiError is an error the supervisor returned, with its kind if it had one.
type apiError struct {
	msg  string
	kind error
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.kind }

// Client talks to a fleet's supervisor.
type Client struct {
	dirs Dirs
	http *http.Client
}

// NewClient returns a client for the fleet in dirs.
func NewClient(d Dirs) *Client {
	return &Client{dirs: d, http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dd net.Dialer
			return dd.DialContext(ctx, "unix", d.Socket())
		}},
	}}
}

// ErrNotRunning means no supervisor answers for the fleet.
var ErrNotRunning = errors.New("the fleet's supervisor is not running")

func (c *Client) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, "http://supervisor"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrNotRunning, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Kind string }
		json.NewDecoder(resp.Body).Decode(&e)
		return &apiError{msg: e.Error, kind: errorKinds[e.Kind]}
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// Status is the supervisor's live state.
func (c *Client) Status() (State, error) {
	var st State
	err := c.do("GET", "/status", nil, &st)
	return st, err
}

// Rollout starts a rollout and returns its id.
func (c *Client) Rollout(req RolloutRequest) (int, error) {
	var out struct{ ID int }
	err := c.do("POST", "/rollout", req, &out)
	return out.ID, err
}

// Promote lets a rollout waiting for promotion switch traffic.
func (c *Client) Promote() error { return c.do("POST", "/promote", nil, nil) }

// Down asks the supervisor to stop every instance and exit.
func (c *Client) Down() error { return c.do("POST", "/down", nil, nil) }
