package images

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	long := strings.Repeat("a", 129)
	tests := []struct {
		in      string
		want    Ref
		wantErr string // exact message when set
	}{
		{in: "hello:1.0.0", want: Ref{Name: "hello", Version: "1.0.0"}},
		{in: "hello", want: Ref{Name: "hello", Version: ""}},
		{in: "debian-12_x.y:12.5-rc1+build.7", want: Ref{Name: "debian-12_x.y", Version: "12.5-rc1+build.7"}},
		{in: "0:V2_final", want: Ref{Name: "0", Version: "V2_final"}},
		{in: strings.Repeat("a", 128) + ":1", want: Ref{Name: strings.Repeat("a", 128), Version: "1"}},
		{in: "Hello:1", wantErr: `invalid image ref "Hello:1": name must be lower-case letters, digits, ., _ or -`},
		{in: "", wantErr: `invalid image ref "": name is empty`},
		{in: ":1.0", wantErr: `invalid image ref ":1.0": name is empty`},
		{in: "hello:", wantErr: `invalid image ref "hello:": version after ":" is empty`},
		{in: "-hello:1", wantErr: `invalid image ref "-hello:1": name must start with a lower-case letter or digit`},
		{in: ".hidden", wantErr: `invalid image ref ".hidden": name must start with a lower-case letter or digit`},
		{in: "a/b:1", wantErr: `invalid image ref "a/b:1": name must be lower-case letters, digits, ., _ or -`},
		{in: "hello:1:2", wantErr: `invalid image ref "hello:1:2": version must be letters, digits, ., _, + or -`},
		{in: "hello:../x", wantErr: `invalid image ref "hello:../x": version must be letters, digits, ., _, + or -`},
		{in: "hello:.1", wantErr: `invalid image ref "hello:.1": version must start with a letter or digit`},
		{in: "hello:-1", wantErr: `invalid image ref "hello:-1": version must start with a letter or digit`},
		{in: "hel lo", wantErr: `invalid image ref "hel lo": name must be lower-case letters, digits, ., _ or -`},
		{in: long, wantErr: `invalid image ref "` + long + `": name is longer than 128 characters`},
		{in: "a:" + long, wantErr: `invalid image ref "a:` + long + `": version is longer than 128 characters`},

		// Channels.
		{in: "hello@stable", want: Ref{Name: "hello", Channel: "stable"}},
		{in: "hello@latest", want: Ref{Name: "hello", Channel: "latest"}},
		{in: "hello@Beta-2.x_y+z", want: Ref{Name: "hello", Channel: "Beta-2.x_y+z"}},
		{in: "hello@" + strings.Repeat("c", 128), want: Ref{Name: "hello", Channel: strings.Repeat("c", 128)}},
		{in: "hello@", wantErr: `invalid image ref "hello@": channel after "@" is empty`},
		{in: "@stable", wantErr: `invalid image ref "@stable": name is empty`},
		{in: "Hello@stable", wantErr: `invalid image ref "Hello@stable": name must be lower-case letters, digits, ., _ or -`},
		{in: "hello@1.0", wantErr: `invalid image ref "hello@1.0": channel must start with a letter (hello:1.0 names a version)`},
		{in: "hello@-x", wantErr: `invalid image ref "hello@-x": channel must start with a letter (hello:1.0 names a version)`},
		{in: "hello@st/able", wantErr: `invalid image ref "hello@st/able": channel must be letters, digits, ., _, + or -`},
		{in: "hello@a@b", wantErr: `invalid image ref "hello@a@b": channel must be letters, digits, ., _, + or -`},
		{in: "hello:1.0@stable", wantErr: `invalid image ref "hello:1.0@stable": give either name:version or name@channel, not both`},
		{in: "hello@stable:1", wantErr: `invalid image ref "hello@stable:1": give either name:version or name@channel, not both`},
		{in: "hello@" + long, wantErr: `invalid image ref "hello@` + long + `": channel is longer than 128 characters`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRef(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseRef(%q) = %+v, want error %q", tt.in, got, tt.wantErr)
				}
				if err.Error() != tt.wantErr {
					t.Errorf("error = %q, want %q", err, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalidRef) {
					t.Errorf("error %v does not match ErrInvalidRef", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRef(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseRef(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestLooksLikeRef(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile(filepath.Join(dir, "disk"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in   string
		want bool
	}{
		{"hello:1.0.0", true},
		{"hello", true},
		{"Hello:1", true}, // not a path: ParseRef will explain what is wrong
		{"disk", false},   // an existing file wins
		{"./hello", false},
		{"images/hello", false},
		{"/var/lib/x", false},
		{"out.qcow2", false},
		{"OUT.QCOW2", false},
		{"disk.img", false},
		{"disk.raw", false},
		{".hidden", false},
		{"~/x", false},
		{"", false},
	}
	tests = append(tests, struct {
		in   string
		want bool
	}{"hello@stable", true})
	for _, tt := range tests {
		if got := LooksLikeRef(tt.in); got != tt.want {
			t.Errorf("LooksLikeRef(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// refGrammar is ParseRef's documented grammar, written independently of
// its code: FuzzParseRef checks that exactly these strings are accepted.
var refGrammar = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}(:[A-Za-z0-9][A-Za-z0-9._+-]{0,127}|@[A-Za-z][A-Za-z0-9._+-]{0,127})?$`)

// FuzzParseRef checks that ParseRef accepts exactly its documented grammar,
// that what it accepts round-trips through String, and that the parts it
// returns are safe to use as file names in the store.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"hello:1.0.0", "hello", "Hello:1", "", ":", "a:b:c", "a:..", "x:1+2", "ü:1", "a\x00:1",
		"hello@stable", "hello@latest", "hello@", "@x", "a@b@c", "a@..", "a@1", "a:1@b", "a@b:1", "a@B+1.x-y_z", "a@é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if want := refGrammar.MatchString(s); want != (err == nil) {
			t.Fatalf("ParseRef(%q) = %+v, %v; the documented grammar says valid=%v", s, r, err, want)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidRef) {
				t.Fatalf("error %v does not match ErrInvalidRef", err)
			}
			if r != (Ref{}) {
				t.Fatalf("ParseRef(%q) failed but returned %+v", s, r)
			}
			return
		}
		// Round trip: String gives back the input, which parses to the
		// same ref.
		if r.String() != s {
			t.Fatalf("ParseRef(%q).String() = %q", s, r.String())
		}
		if again, err := ParseRef(r.String()); err != nil || again != r {
			t.Fatalf("ParseRef(%q) = %+v, but ParseRef(%q) = %+v, %v", s, r, r.String(), again, err)
		}
		// Valid refs become paths: they must never escape their folder.
		for _, part := range []string{r.Name, r.Version, r.Channel} {
			if strings.ContainsAny(part, "/\\:@\x00") || part == "." || part == ".." || len(part) > 128 {
				t.Fatalf("ParseRef(%q) accepted unsafe part %q", s, part)
			}
		}
		if r.Version != "" && r.Channel != "" {
			t.Fatalf("ParseRef(%q) set both version and channel: %+v", s, r)
		}
		if r.Channel != "" && !(r.Channel[0] >= 'a' && r.Channel[0] <= 'z' || r.Channel[0] >= 'A' && r.Channel[0] <= 'Z') {
			t.Fatalf("ParseRef(%q) accepted channel %q not starting with a letter", s, r.Channel)
		}
		if err := r.validate(r.Version != ""); err != nil {
			t.Fatalf("ParseRef accepted %q but validate says %v", s, err)
		}
	})
}

func TestRefStringAndValidate(t *testing.T) {
	tests := []struct {
		r       Ref
		str     string
		wantErr string // from validate(false)
	}{
		{Ref{Name: "a"}, "a", ""},
		{Ref{Name: "a", Version: "1"}, "a:1", ""},
		{Ref{Name: "a", Channel: "stable"}, "a@stable", ""},
		{Ref{Name: "a", Version: "1", Channel: "stable"}, "a:1@stable", "give either a version or a channel, not both"},
		{Ref{Name: "a", Channel: "1x"}, "a@1x", "channel must start with a letter"},
		{Ref{Name: "a", Channel: "../x"}, "a@../x", "channel must be letters"},
	}
	for _, tt := range tests {
		t.Run(tt.str, func(t *testing.T) {
			if got := tt.r.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
			err := tt.r.validate(false)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidRef) {
				t.Errorf("validate = %v, want ErrInvalidRef containing %q", err, tt.wantErr)
			}
		})
	}
}
