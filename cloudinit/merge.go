package cloudinit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// protected are the top-level keys where kiln's value always wins. They
// decide which SSH host keys the guest presents; if the user could change
// them, kiln's host key check would fail (or, worse, be meaningless).
var protected = map[string]bool{
	"ssh_keys":        true,
	"ssh_deletekeys":  true,
	"ssh_genkeytypes": true,
}

// Merge returns base (kiln's cloud-config) with user (the user's) merged in.
// The rules, applied key by key:
//
//   - A key in only one of the two is kept as is.
//   - Top-level keys in the protected set (ssh_keys, ssh_deletekeys,
//     ssh_genkeytypes) keep base's value: kiln must own the host keys to
//     verify them.
//   - A null user value keeps base's: an empty "runcmd:" means "nothing to
//     add", not "delete kiln's".
//   - Two maps merge recursively with these same rules (without protection).
//   - Two lists concatenate, base first: the user's users: entries are
//     created after kiln's user, and their runcmd, packages and write_files
//     are kept alongside kiln's.
//   - Anything else, including a type mismatch, is a scalar: the user's
//     value wins (so the user can turn off, for example, manage_etc_hosts).
//
// Merge does not modify base or user. The result shares values with them
// that did not need merging.
func Merge(base, user map[string]any) map[string]any {
	return mergeMaps(base, user, protected)
}

func mergeMaps(base, user map[string]any, prot map[string]bool) map[string]any {
	out := make(map[string]any, len(base)+len(user))
	for k, v := range base {
		out[k] = v
	}
	for k, uv := range user {
		bv, inBase := base[k]
		switch {
		case !inBase:
			out[k] = uv
		case prot[k] || uv == nil:
			// keep base
		default:
			out[k] = mergeValues(bv, uv)
		}
	}
	return out
}

func mergeValues(bv, uv any) any {
	if bm, ok := asMap(bv); ok {
		if um, ok := asMap(uv); ok {
			return mergeMaps(bm, um, nil)
		}
	}
	if bl, ok := asList(bv); ok {
		if ul, ok := asList(uv); ok {
			out := make([]any, 0, len(bl)+len(ul))
			return append(append(out, bl...), ul...)
		}
	}
	return uv
}

// asMap accepts any map with string keys (yaml.v3 decodes those as
// map[string]any; Go callers of Merge may pass other map types).
func asMap(v any) (map[string]any, bool) {
	if m, ok := v.(map[string]any); ok {
		return m, true
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Map || rv.Type().Key().Kind() != reflect.String {
		return nil, false
	}
	m := make(map[string]any, rv.Len())
	for it := rv.MapRange(); it.Next(); {
		m[it.Key().String()] = it.Value().Interface()
	}
	return m, true
}

// asList accepts any slice or array except []byte, which YAML treats as a
// string.
func asList(v any) ([]any, bool) {
	if l, ok := v.([]any); ok {
		return l, true
	}
	rv := reflect.ValueOf(v)
	if (rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array) || rv.Type().Elem().Kind() == reflect.Uint8 {
		return nil, false
	}
	l := make([]any, rv.Len())
	for i := range l {
		l[i] = rv.Index(i).Interface()
	}
	return l, true
}

// unmergeable are user-data formats cloud-init understands that are not a
// single cloud-config document, so there is nothing kiln could merge into.
// Longer prefixes come first ("#cloud-config-archive" before "#cloud-config").
var unmergeable = []struct{ prefix, what string }{
	{"#!", "a script"},
	{"#include", "an #include list"},
	{"#cloud-config-archive", "a cloud-config archive"},
	{"#cloud-config-jsonp", "a cloud-config JSON patch"},
	{"#cloud-boothook", "a boothook"},
	{"#part-handler", "a part handler"},
	{"#upstart-job", "an upstart job"},
	{"## template:", "a template"},
	{"content-type:", "a MIME multipart message"},
	{"mime-version:", "a MIME multipart message"},
	{"\x1f\x8b", "gzip-compressed data"},
}

// ParseUserData parses the user's user-data for Merge. Empty input (or only
// comments, or YAML null) gives a nil map. It fails unless the input is a
// single YAML mapping, optionally headed by "#cloud-config".
//
// Plain YAML 1.1 booleans (yes/no/on/off) become booleans, as they do in
// cloud-init's parser; yaml.v3 alone would turn them into strings.
func ParseUserData(data []byte) (m map[string]any, err error) {
	// yaml.v3 has panicked on hostile input before; never take kiln down.
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("user-data: %v: must be a cloud-config YAML mapping", r)
		}
	}()
	if len(data) > MaxUserData {
		return nil, fmt.Errorf("user-data is %d bytes, more than the %d kiln takes: keep cloud-config to settings and short scripts, and upload files with a file provisioner", len(data), MaxUserData)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	for _, u := range unmergeable {
		if len(data) >= len(u.prefix) && strings.EqualFold(string(data[:len(u.prefix)]), u.prefix) {
			return nil, fmt.Errorf("user-data is %s (starts with %q): only #cloud-config YAML can be merged with kiln's user-data", u.what, u.prefix)
		}
	}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("user-data: %w: must be a cloud-config YAML mapping", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("more than one YAML document")
		}
		return nil, fmt.Errorf("user-data: %w: must be a cloud-config YAML mapping", err)
	}

	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, nil
	}
	if deeper(root, maxUserDataDepth) {
		return nil, fmt.Errorf("user-data nests more than %d levels deep: must be a cloud-config YAML mapping of settings", maxUserDataDepth)
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("user-data: top level is a %s: must be a cloud-config YAML mapping", kindName(root))
	}
	for i := 0; i < len(root.Content); i += 2 {
		if k := root.Content[i]; k.ShortTag() != "!!str" && k.ShortTag() != "!!merge" {
			return nil, fmt.Errorf("user-data: line %d: key %q is a %s: must be a cloud-config YAML mapping with string keys", k.Line, k.Value, k.ShortTag())
		}
	}
	yaml11Bools(root)
	if err := root.Decode(&m); err != nil {
		return nil, fmt.Errorf("user-data: %w: must be a cloud-config YAML mapping", err)
	}
	return m, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar (" + n.ShortTag() + ")"
	case yaml.AliasNode:
		return "alias"
	}
	return "non-mapping"
}

// yaml11Bools retags the plain scalar values PyYAML reads as booleans. Map
// keys are left alone: cloud-config keys are strings.
func yaml11Bools(n *yaml.Node) {
	for i, c := range n.Content {
		if n.Kind == yaml.MappingNode && i%2 == 0 {
			if c.Kind != yaml.ScalarNode {
				yaml11Bools(c)
			}
			continue
		}
		if c.Kind == yaml.ScalarNode {
			if c.Style == 0 && c.ShortTag() == "!!str" {
				switch c.Value {
				case "yes", "Yes", "YES", "on", "On", "ON":
					c.Tag, c.Value = "!!bool", "true"
				case "no", "No", "NO", "off", "Off", "OFF":
					c.Tag, c.Value = "!!bool", "false"
				}
			}
			continue
		}
		yaml11Bools(c)
	}
}
