package ociimage

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// Options say how to reach a registry.
type Options struct {
	// Username and Password, when Username is set, are used instead of the
	// docker credentials (~/.docker/config.json and its helpers).
	Username, Password string

	// PlainHTTP talks HTTP instead of HTTPS. Loopback registries
	// (localhost, 127.0.0.0/8, ::1) get it without asking; every other
	// registry is HTTPS with its certificate verified.
	PlainHTTP bool

	// Transport replaces http.DefaultTransport (tests count and break
	// requests with it).
	Transport http.RoundTripper

	// Progress, when set, is called as bytes move: done of total for the
	// whole push or pull.
	Progress func(done, total int64)

	// ChunkSize is the largest layer a push makes; 0 is DefaultChunkSize.
	ChunkSize int64
}

// Reference is a parsed REGISTRY/REPO[:TAG|@sha256:…].
type Reference struct {
	registry.Reference
}

// ParseReference parses a registry reference. A bare REGISTRY/REPO has no
// tag or digest; callers choose the default.
func ParseReference(s string) (Reference, error) {
	r, err := registry.ParseReference(s)
	if err != nil {
		return Reference{}, fmt.Errorf("registry reference %q: %v; write REGISTRY/REPO[:TAG] or REGISTRY/REPO@sha256:…, e.g. ghcr.io/acme/hello:1.0.0", s, trimOras(err))
	}
	return Reference{r}, nil
}

// IsDigest reports whether the reference names a manifest digest.
func (r Reference) IsDigest() bool {
	_, err := r.Digest()
	return err == nil
}

// Tag returns the tag the reference names, or "" for a digest or none.
func (r Reference) Tag() string {
	if r.IsDigest() {
		return ""
	}
	return r.Reference.Reference
}

// Repo is REGISTRY/REPO without tag or digest.
func (r Reference) Repo() string { return r.Registry + "/" + r.Repository }

// isLoopback reports whether host (with or without a port) is this machine.
func isLoopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// repository opens ref's repository with credentials and transport.
func (o Options) repository(ref Reference) (*remote.Repository, error) {
	repo, err := remote.NewRepository(ref.Repo())
	if err != nil {
		return nil, fmt.Errorf("registry reference %s: %v", ref.Repo(), trimOras(err))
	}
	repo.PlainHTTP = o.PlainHTTP || isLoopback(ref.Registry)
	base := o.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	client := &auth.Client{
		Client: &http.Client{Transport: retry.NewTransport(base)},
		Cache:  auth.NewCache(),
	}
	client.SetUserAgent("kiln")
	if o.Username != "" {
		client.Credential = auth.StaticCredential(ref.Registry, auth.Credential{Username: o.Username, Password: o.Password})
	} else {
		store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading docker credentials (~/.docker/config.json): %w", err)
		}
		client.Credential = credentials.Credential(store)
	}
	repo.Client = client
	return repo, nil
}

// explain turns protocol errors into one line that says what to do.
func explain(ref Reference, o Options, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var er *errcode.ErrorResponse
	if errors.As(err, &er) {
		switch er.StatusCode {
		case http.StatusUnauthorized:
			who := "no credentials"
			if o.Username != "" {
				who = "user " + o.Username
			}
			return fmt.Errorf("registry %s refused %s (401 unauthorized): check the username and password (--username with --password-stdin, or `docker login %s`)", ref.Registry, who, ref.Registry)
		case http.StatusForbidden:
			return fmt.Errorf("registry %s denied access to %s (403 forbidden): the account lacks permission for this repository", ref.Registry, ref.Repository)
		}
	}
	if errors.Is(err, auth.ErrBasicCredentialNotFound) {
		return fmt.Errorf("registry %s needs a login: pass --username with --password-stdin, or run `docker login %s`", ref.Registry, ref.Registry)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		var cerr *x509.UnknownAuthorityError
		var herr x509.HostnameError
		switch {
		case errors.As(err, &cerr) || errors.As(err, &herr) || strings.Contains(err.Error(), "certificate"):
			return fmt.Errorf("registry %s: its TLS certificate is not trusted (%v); install its CA, or use --plain-http only if it really serves plain HTTP", ref.Registry, uerr.Err)
		case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
			return fmt.Errorf("registry %s speaks plain HTTP, not HTTPS; pass --plain-http if you trust the network to it", ref.Registry)
		}
		return fmt.Errorf("registry %s cannot be reached: %v", ref.Registry, uerr.Err)
	}
	return err
}

// notFound says a tag or digest is missing, naming the reference.
func notFound(ref Reference, err error) error {
	if errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("%s not found in the registry; check the repository and tag", ref)
	}
	return err
}

// trimOras drops oras's "invalid reference: " style prefixes from parse
// errors, which repeat what the caller's message says.
func trimOras(err error) string {
	s := err.Error()
	for _, p := range []string{errdef.ErrInvalidReference.Error() + ": "} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}
