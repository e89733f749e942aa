package layout

import (
	"path/filepath"
	"testing"
)

func TestHomeFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want Home
	}{
		{"defaults", nil, Home{"/home/u/.local/share/kiln", "/home/u/.cache/kiln", "/home/u/.cache/kiln/run"}},
		{"xdg", map[string]string{"XDG_DATA_HOME": "/d", "XDG_CACHE_HOME": "/c", "XDG_RUNTIME_DIR": "/run/user/1"},
			Home{"/d/kiln", "/c/kiln", "/run/user/1/kiln"}},
		{"relative xdg ignored", map[string]string{"XDG_DATA_HOME": "d", "XDG_CACHE_HOME": "c", "XDG_RUNTIME_DIR": "r"},
			Home{"/home/u/.local/share/kiln", "/home/u/.cache/kiln", "/home/u/.cache/kiln/run"}},
		{"runtime falls back to cache", map[string]string{"XDG_CACHE_HOME": "/c"}, Home{"/home/u/.local/share/kiln", "/c/kiln", "/c/kiln/run"}},
		{"kiln home wins", map[string]string{"KILN_HOME": "/k", "XDG_DATA_HOME": "/d", "XDG_RUNTIME_DIR": "/r"},
			Home{"/k/data", "/k/cache", "/k/run"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := homeFromEnv(func(k string) string { return tt.env[k] }, func() string { return "/home/u" })
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	t.Setenv("KILN_HOME", "rel")
	p := Default()
	abs, _ := filepath.Abs("rel")
	if p.Data != filepath.Join(abs, "data") {
		t.Errorf("relative KILN_HOME not made absolute: %+v", p)
	}
	if p.StoreDir() != filepath.Join(abs, "data", "images") {
		t.Errorf("StoreDir() = %q", p.StoreDir())
	}
}
