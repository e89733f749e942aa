package cloudinit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"strings"
)

// A user-data file that is not one cloud-config document (a script, a MIME
// multipart message, an #include list, a boothook, gzip, a jinja template)
// cannot be merged key by key. kiln then hands cloud-init a MIME multipart
// message instead: kiln's defaults first, the user's parts unchanged in
// their order, and last the part kiln needs to log in and verify the guest
// (its user and its host keys), with a merge_how that appends kiln's user
// to the users the user's parts declare and makes kiln's host keys win.
// cloud-init merges the cloud-config parts in order, runs the scripts and
// boothooks, and fetches the includes, so everything the user asked for
// happens and kiln's login still works.

// Part is one part of a MIME multipart user-data.
type Part struct {
	ContentType string
	Filename    string               // Content-Disposition filename; "" = none
	Header      textproto.MIMEHeader // other headers kept from the user's part (Merge-Type, Content-Transfer-Encoding)
	Body        []byte
}

// usersMerge is cloud-init's merge_how for kiln's users part: lists are
// appended to (kiln's login user joins the users the user's parts declare)
// and what the user set is kept. ("replace" would not do: cloud-init's
// dict merger then replaces a list without looking into it.)
var usersMerge = []any{
	map[string]any{"name": "list", "settings": []any{"append"}},
	map[string]any{"name": "dict", "settings": []any{"no_replace", "recurse_array"}},
}

// typePrefixes map the first line of a user-data file to the MIME type
// cloud-init gives it; longer prefixes first. See cloud-init's
// "User-data formats".
var typePrefixes = []struct{ prefix, ctype string }{
	{"#cloud-config-archive", "text/cloud-config-archive"},
	{"#cloud-config-jsonp", "text/cloud-config-jsonp"},
	{"#cloud-config", "text/cloud-config"},
	{"#include-once", "text/x-include-once-url"},
	{"#include", "text/x-include-url"},
	{"#cloud-boothook", "text/cloud-boothook"},
	{"#part-handler", "text/part-handler"},
	{"#upstart-job", "text/upstart-job"},
	{"## template: jinja", "text/jinja2"},
	{"#!", "text/x-shellscript"},
}

// maxUserData bounds user-data after decompression: cloud-init reads it into
// memory, and a gzip bomb must not take kiln down first.
const maxUserData = 16 << 20

// IsMergeable reports whether data is one cloud-config document (or empty),
// which kiln merges into its own; anything else goes in a multipart.
func IsMergeable(data []byte) bool {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	for _, u := range unmergeable {
		if len(data) >= len(u.prefix) && strings.EqualFold(string(data[:len(u.prefix)]), u.prefix) {
			return false
		}
	}
	return true
}

// SplitUserData returns the parts of a user-data file in any form
// cloud-init accepts: a MIME multipart message gives its parts (nested
// multiparts flattened), gzip is decompressed, and a single document
// becomes one part typed by its first line. Empty input gives no parts.
func SplitUserData(data []byte) ([]Part, error) {
	return splitUserData(data, 0)
}

func splitUserData(data []byte, depth int) ([]Part, error) {
	if depth > 8 {
		return nil, errors.New("user-data: MIME parts or gzip nested more than 8 deep")
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	if bytes.HasPrefix(data, []byte("\x1f\x8b")) {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("user-data: gzip: %w", err)
		}
		plain, err := io.ReadAll(io.LimitReader(zr, maxUserData+1))
		if err != nil {
			return nil, fmt.Errorf("user-data: gzip: %w", err)
		}
		if len(plain) > maxUserData {
			return nil, fmt.Errorf("user-data: more than %d MiB once decompressed", maxUserData>>20)
		}
		return splitUserData(plain, depth+1)
	}
	if isMIME(data) {
		return splitMIME(data, depth)
	}
	ctype := "text/cloud-config" // what cloud-init assumes of a plain YAML mapping kiln accepted before
	for _, p := range typePrefixes {
		if len(data) >= len(p.prefix) && strings.EqualFold(string(data[:len(p.prefix)]), p.prefix) {
			ctype = p.ctype
			break
		}
	}
	if ctype == "text/cloud-config" && !bytes.HasPrefix(data, []byte("#cloud-config")) {
		data = append([]byte(cloudConfigHeader), data...)
	}
	return []Part{{ContentType: ctype, Body: data}}, nil
}

func isMIME(data []byte) bool {
	head := strings.ToLower(string(data[:min(len(data), 64)]))
	return strings.HasPrefix(head, "content-type:") || strings.HasPrefix(head, "mime-version:")
}

// keptHeaders are the headers of a user's part that cloud-init reads and
// that kiln carries over as they are.
var keptHeaders = []string{"Merge-Type", "X-Merge-Type", "Content-Transfer-Encoding", "Launch-Index"}

func splitMIME(data []byte, depth int) ([]Part, error) {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(data)))
	hdr, err := tp.ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("user-data: MIME headers: %w", err)
	}
	mt, params, err := mime.ParseMediaType(hdr.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("user-data: MIME Content-Type: %w", err)
	}
	body, err := io.ReadAll(tp.R)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(mt, "multipart/") {
		// One MIME part on its own.
		return []Part{mimePart(hdr, mt, params, body)}, nil
	}
	if params["boundary"] == "" {
		return nil, errors.New("user-data: MIME multipart without a boundary")
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var parts []Part
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("user-data: MIME multipart: %w", err)
		}
		pb, err := io.ReadAll(io.LimitReader(p, maxUserData+1))
		if err != nil {
			return nil, fmt.Errorf("user-data: MIME multipart: %w", err)
		}
		pmt, pparams, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			// cloud-init guesses the type of an untyped part from its body.
			sub, err := splitUserData(pb, depth+1)
			if err != nil {
				return nil, err
			}
			parts = append(parts, sub...)
			continue
		}
		if strings.HasPrefix(pmt, "multipart/") {
			var raw bytes.Buffer
			fmt.Fprintf(&raw, "Content-Type: %s\n\n", p.Header.Get("Content-Type"))
			raw.Write(pb)
			sub, err := splitMIME(raw.Bytes(), depth+1)
			if err != nil {
				return nil, err
			}
			parts = append(parts, sub...)
			continue
		}
		parts = append(parts, mimePart(p.Header, pmt, pparams, pb))
	}
	return parts, nil
}

func mimePart(h textproto.MIMEHeader, mt string, params map[string]string, body []byte) Part {
	p := Part{ContentType: mt, Body: body, Header: textproto.MIMEHeader{}}
	if cs := params["charset"]; cs != "" {
		p.ContentType = mime.FormatMediaType(mt, map[string]string{"charset": cs})
	}
	if _, dp, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil {
		p.Filename = dp["filename"]
	}
	for _, k := range keptHeaders {
		if v := h.Get(k); v != "" {
			p.Header.Set(k, v)
		}
	}
	return p
}

// Multipart renders parts as a MIME multipart/mixed user-data file.
func Multipart(parts []Part) ([]byte, error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	boundary := "kiln-" + hex.EncodeToString(b[:])
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "Content-Type: multipart/mixed; boundary=\"%s\"\nMIME-Version: 1.0\n\n", boundary)
	w := multipart.NewWriter(&buf)
	if err := w.SetBoundary(boundary); err != nil {
		return nil, err
	}
	for i, p := range parts {
		h := textproto.MIMEHeader{}
		for k, v := range p.Header {
			h[k] = v
		}
		h.Set("Content-Type", p.ContentType)
		name := p.Filename
		if name == "" {
			name = fmt.Sprintf("part-%03d", i+1)
		}
		h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
		pw, err := w.CreatePart(h)
		if err != nil {
			return nil, err
		}
		if _, err := pw.Write(p.Body); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Combine returns a multipart user-data: first (kiln's defaults, which the
// user's parts may override), the user's user-data split into its parts,
// then last (what kiln must keep): its "users" in a part that cloud-init
// appends to the user's users, and the rest in a final part whose
// top-level keys replace the user's (cloud-init's default merge), so kiln's
// host keys win. first may be nil.
func Combine(first, last map[string]any, user []byte) ([]byte, error) {
	userParts, err := SplitUserData(user)
	if err != nil {
		return nil, err
	}
	var parts []Part
	if len(first) > 0 {
		body, err := encodeYAML(first)
		if err != nil {
			return nil, fmt.Errorf("user-data: %w", err)
		}
		parts = append(parts, Part{ContentType: "text/cloud-config", Filename: "kiln-defaults.yaml", Body: append([]byte(cloudConfigHeader), body...)})
	}
	parts = append(parts, userParts...)
	cloudConfig := func(name string, m map[string]any) error {
		body, err := encodeYAML(m)
		if err != nil {
			return fmt.Errorf("user-data: %w", err)
		}
		parts = append(parts, Part{ContentType: "text/cloud-config", Filename: name, Body: append([]byte(cloudConfigHeader), body...)})
		return nil
	}
	rest := map[string]any{}
	for k, v := range last {
		if k != "users" {
			rest[k] = v
		}
	}
	if users, ok := last["users"]; ok {
		if err := cloudConfig("kiln-user.yaml", map[string]any{"users": users, "merge_how": usersMerge}); err != nil {
			return nil, err
		}
	}
	if len(rest) > 0 {
		if err := cloudConfig("kiln-host-keys.yaml", rest); err != nil {
			return nil, err
		}
	}
	return Multipart(parts)
}

// mustKeep are the keys of kiln's cloud-config that its last part carries:
// its login user and its host keys.
var mustKeep = map[string]bool{"users": true, "ssh_keys": true, "ssh_deletekeys": true, "ssh_genkeytypes": true}

// UserDataFile returns the user-data file for c: kiln's cloud-config merged
// with c.UserData when that is one cloud-config document (UserDataYAML),
// and otherwise a multipart of kiln's parts around the user's (Combine).
func (c Config) UserDataFile() ([]byte, error) {
	if IsMergeable(c.UserData) {
		return c.UserDataYAML()
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	first, last := map[string]any{}, map[string]any{}
	for k, v := range c.baseUserData() {
		if mustKeep[k] {
			last[k] = v
		} else {
			first[k] = v
		}
	}
	return Combine(first, last, c.UserData)
}

// HostKeysConfig is the cloud-config that makes a guest present exactly
// keys, for a template's own seed that kiln adds its host keys to.
func HostKeysConfig(keys []HostKey) (map[string]any, error) {
	if len(keys) == 0 {
		return nil, errors.New("cloudinit: no host keys to add")
	}
	for _, k := range keys {
		if err := k.validate(); err != nil {
			return nil, err
		}
	}
	base := Config{HostKeys: keys}.baseUserData()
	out := map[string]any{}
	for k := range mustKeep {
		if k != "users" {
			out[k] = base[k]
		}
	}
	return out, nil
}
