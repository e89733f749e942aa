package supervisor

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-dev/kiln/images"
)

// A refusal the supervisor makes reaches the CLI as the same kind of error,
// so cmd/kiln can name the flag that overrides it.
func TestClientKeepsErrorKinds(t *testing.T) {
	d := Dirs{Root: t.TempDir()}
	os.MkdirAll(filepath.Dir(d.Socket()), 0o700)
	l, err := net.Listen("unix", d.Socket())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/revoked" {
			writeError(w, http.StatusConflict, fmt.Errorf("rollout: %w", images.ErrRevoked))
			return
		}
		writeError(w, http.StatusConflict, errors.New("something else"))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	c := NewClient(d)
	if err := c.do("POST", "/revoked", nil, nil); !errors.Is(err, images.ErrRevoked) || err.Error() != "rollout: image revoked" {
		t.Errorf("revoked: %v (matches ErrRevoked: %v)", err, errors.Is(err, images.ErrRevoked))
	}
	if err := c.do("POST", "/other", nil, nil); errors.Is(err, images.ErrRevoked) || err.Error() != "something else" {
		t.Errorf("other: %v", err)
	}
}
