package layout

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// Home is kiln's three roots. Data holds what must survive (the image
// store, fleets), Cache what can be downloaded or rebuilt again, Runtime what
// only matters while kiln runs (work folders, claims). Callers create them
// as needed, 0700.
type Home struct {
	Data    string
	Cache   string
	Runtime string
}

// Default derives Home from the environment:
//
//   - $KILN_HOME, when set, holds everything (data, cache, run), so tests and
//     CI can point kiln at one throwaway folder;
//   - otherwise the XDG base directories ($XDG_DATA_HOME/kiln,
//     $XDG_CACHE_HOME/kiln, $XDG_RUNTIME_DIR/kiln), ignoring relative values
//     as the XDG spec requires, with ~/.local/share/kiln and ~/.cache/kiln as
//     defaults and Cache/run when there is no runtime folder.
//
// If the home folder cannot be found at all, a per-user folder under the
// system temp folder is used rather than failing.
func Default() Home {
	return homeFromEnv(os.Getenv, homeDir)
}

func homeFromEnv(getenv func(string) string, home func() string) Home {
	if kh := getenv("KILN_HOME"); kh != "" {
		if abs, err := filepath.Abs(kh); err == nil {
			kh = abs
		}
		return Home{
			Data:    filepath.Join(kh, "data"),
			Cache:   filepath.Join(kh, "cache"),
			Runtime: filepath.Join(kh, "run"),
		}
	}
	xdg := func(key string, fallback ...string) string {
		if v := getenv(key); v != "" && filepath.IsAbs(v) {
			return filepath.Join(v, "kiln")
		}
		if fallback == nil {
			return ""
		}
		return filepath.Join(append([]string{home()}, fallback...)...)
	}
	p := Home{
		Data:    xdg("XDG_DATA_HOME", ".local", "share", "kiln"),
		Cache:   xdg("XDG_CACHE_HOME", ".cache", "kiln"),
		Runtime: xdg("XDG_RUNTIME_DIR"),
	}
	if p.Runtime == "" {
		p.Runtime = filepath.Join(p.Cache, "run")
	}
	return p
}

func homeDir() string {
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return h
	}
	if u, err := user.Current(); err == nil && u.HomeDir != "" {
		return u.HomeDir
	}
	return filepath.Join(os.TempDir(), "kiln-"+strconv.Itoa(os.Getuid()))
}
