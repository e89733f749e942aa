package images

import (
	"path/filepath"
	"testing"
)

func TestPathsFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want Paths
	}{
		{"defaults", nil, Paths{"/home/u/.local/share/kiln", "/home/u/.cache/kiln", "/home/u/.cache/kiln/run"}},
		{"xdg", map[string]string{"XDG_DATA_HOME": "/d", "XDG_CACHE_HOME": "/c", "XDG_RUNTIME_DIR": "/run/user/1"},
			Paths{"/d/kiln", "/c/kiln", "/run/user/1/kiln"}},
		{"relative xdg ignored", map[string]string{"XDG_DATA_HOME": "d", "XDG_CACHE_HOME": "c", "XDG_RUNTIME_DIR": "r"},
			Paths{"/home/u/.local/share/kiln", "/home/u/.cache/kiln", "/home/u/.cache/kiln/run"}},
		{"runtime falls back to cache", map[string]string{"XDG_CACHE_HOME": "/c"}, Paths{"/home/u/.local/share/kiln", "/c/kiln", "/c/kiln/run"}},
		{"kiln home wins", map[string]string{"KILN_HOME": "/k", "XDG_DATA_HOME": "/d", "XDG_RUNTIME_DIR": "/r"},
			Paths{"/k/data", "/k/cache", "/k/run"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pathsFromEnv(func(k string) string { return tt.env[k] }, func() string { return "/home/u" })
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDefaultPaths(t *testing.T) {
	t.Setenv("KILN_HOME", "rel")
	p := DefaultPaths()
	abs, _ := filepath.Abs("rel")
	if p.Data != filepath.Join(abs, "data") {
		t.Errorf("relative KILN_HOME not made absolute: %+v", p)
	}
	if p.Images() != filepath.Join(abs, "data", "images") {
		t.Errorf("Images() = %q", p.Images())
	}
}
