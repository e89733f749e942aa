package bake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/cloudinit"
	"github.com/kiln-dev/kiln/instance"
)

// The guest reaches the host's 127.0.0.1 as 10.0.2.2 on QEMU's user network.
const guestHostIP = "10.0.2.2"

// httpVar matches Packer's {{ .HTTPIP }} and {{ .HTTPPort }} (and
// {{ .HTTPAddr }}) in qemuargs.
var httpVar = regexp.MustCompile(`\{\{\s*\.(HTTPIP|HTTPPort|HTTPAddr)\s*\}\}`)

// ownSeed prepares the template's own seed for booting: kiln's host keys
// added to its user-data wherever kiln serves it, its HTTP files served on
// 127.0.0.1, and the QEMU arguments with the server's address filled in.
func (b *builder) ownSeed(ctx context.Context) (*instance.OwnSeed, error) {
	own := &instance.OwnSeed{}
	if l := b.spec.Login; l != nil {
		own.User, own.Password = l.User, l.Password
		if l.PrivateKeyFile != "" {
			key, err := os.ReadFile(l.PrivateKeyFile)
			if err != nil {
				return nil, fmt.Errorf("ssh_private_key_file: %w", err)
			}
			own.PrivateKey = key
		}
	}
	hostKey, err := cloudinit.NewHostKey()
	if err != nil {
		return nil, err
	}
	keys, err := cloudinit.HostKeysConfig([]cloudinit.HostKey{hostKey})
	if err != nil {
		return nil, err
	}
	pin := func(userData []byte) ([]byte, bool) {
		out, err := cloudinit.Combine(nil, keys, userData)
		if err != nil {
			b.say("the seed's user-data is not one kiln can add its host key to (%v)", err)
			return userData, false
		}
		return out, true
	}
	pinned := false
	seed := b.spec.Seed
	if seed != nil && seed.ISOLabel != "" {
		own.Label = seed.ISOLabel
		own.ISOFiles = map[string][]byte{}
		for name, data := range seed.ISOFiles {
			if name == cloudinit.UserDataFile && strings.EqualFold(seed.ISOLabel, cloudinit.VolumeLabel) {
				data, pinned = pin(data)
			}
			own.ISOFiles[name] = data
		}
	}
	args := b.spec.QEMUArgs
	if seed != nil && (seed.HTTPDir != "" || len(seed.HTTPContent) > 0) {
		port, servedPinned, err := b.serveHTTP(ctx, seed, pin)
		if err != nil {
			return nil, err
		}
		pinned = pinned || servedPinned
		b.httpPort = port
		b.say("serving the template's HTTP files on 127.0.0.1:%d (%s:%d from the guest)", port, guestHostIP, port)
		args = substituteHTTP(args, guestHostIP, port)
	}
	own.ExtraArgs = args
	if pinned {
		own.HostKeys = []string{hostKey.Public}
	}
	return own, nil
}

// substituteHTTP fills Packer's HTTP variables into QEMU arguments.
func substituteHTTP(args []string, ip string, port int) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = httpVar.ReplaceAllStringFunc(a, func(m string) string {
			switch httpVar.FindStringSubmatch(m)[1] {
			case "HTTPIP":
				return ip
			case "HTTPPort":
				return strconv.Itoa(port)
			}
			return ip + ":" + strconv.Itoa(port)
		})
	}
	return out
}

// serveHTTP serves the seed's HTTP files on a random 127.0.0.1 port until
// ctx ends (the build's end). user-data is served with kiln's host keys
// added when it can be.
func (b *builder) serveHTTP(ctx context.Context, seed *Seed, pin func([]byte) ([]byte, bool)) (int, bool, error) {
	content := map[string][]byte{}
	for p, data := range seed.HTTPContent {
		content[path.Clean("/"+p)] = data
	}
	pinned := false
	userData, ok := content["/user-data"]
	if !ok && seed.HTTPDir != "" {
		if data, err := os.ReadFile(seed.HTTPDir + "/user-data"); err == nil {
			userData, ok = data, true
		}
	}
	if ok {
		content["/user-data"], pinned = pin(userData)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, false, fmt.Errorf("http server: %w", err)
	}
	var files http.Handler = http.NotFoundHandler()
	if seed.HTTPDir != "" {
		files = http.FileServer(http.Dir(seed.HTTPDir))
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if data, ok := content[path.Clean(r.URL.Path)]; ok {
				http.ServeContent(w, r, path.Base(r.URL.Path), time.Time{}, bytes.NewReader(data))
				return
			}
			files.ServeHTTP(w, r)
		}),
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.say("http server: %v", err)
		}
	}()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	b.httpServer = srv
	return ln.Addr().(*net.TCPAddr).Port, pinned, nil
}
