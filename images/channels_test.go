package images

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func channelVersions(c Channel) []string {
	var vs []string
	for _, e := range c.History {
		vs = append(vs, e.Version)
	}
	return vs
}

func TestTagResolveUndo(t *testing.T) {
	s := newStore(t)
	for _, ref := range []string{"hello:1.0.0", "hello:1.1.0", "hello:2.0.0-rc1", "world:1"} {
		addFake(t, s, ref, nil)
	}
	type step struct {
		op      string // "tag REF CHANNEL", "undo NAME CHANNEL", "resolve REF"
		want    string // resolved or previous ref
		wantErr string
	}
	steps := []step{
		{op: "resolve hello@stable", wantErr: `image hello@stable not found: hello has no channel "stable"; tag a version into it first`},
		{op: "undo hello stable", wantErr: "hello@stable has never been tagged; there is nothing to undo"},
		{op: "tag hello:1.0.0 stable"},
		{op: "resolve hello@stable", want: "hello:1.0.0"},
		{op: "undo hello stable", wantErr: "hello@stable has no earlier version to go back to"},
		{op: "tag hello:1.1.0 stable"},
		{op: "tag hello:1.1.0 stable"}, // no-op, no new history entry
		{op: "resolve hello@stable", want: "hello:1.1.0"},
		{op: "tag hello:2.0.0-rc1 beta"},
		{op: "tag hello@beta stable"}, // promotion
		{op: "resolve hello@stable", want: "hello:2.0.0-rc1"},
		{op: "resolve hello@latest", want: "hello:2.0.0-rc1"},
		{op: "resolve hello", want: "hello:2.0.0-rc1"},
		{op: "undo hello stable", want: "hello:1.1.0"},
		{op: "resolve hello@stable", want: "hello:1.1.0"},
		{op: "undo hello stable", want: "hello:1.0.0"},
		{op: "undo hello stable", wantErr: "no earlier version"},
		{op: "tag hello:9.9 stable", wantErr: `image hello:9.9 not found; see "kiln images ls"`},
		{op: "tag hello:1.0.0 latest", wantErr: "hello@latest is built in and always means the newest version of hello; tag another channel, e.g. hello@stable"},
		{op: "undo hello latest", wantErr: "hello@latest is built in"},
		{op: "tag hello stable", wantErr: "tagging hello@stable needs a version, e.g. hello:1.0.0"},
		{op: "tag hello:1.0.0 1st", wantErr: `invalid channel "1st": channel must start with a letter`},
		{op: "tag hello:1.0.0 a/b", wantErr: `invalid channel "a/b"`},
		{op: "tag hello@nope stable", wantErr: `image hello@nope not found`},
		{op: "resolve world@latest", want: "world:1"},
		{op: "resolve nope@latest", wantErr: `image nope@latest not found; see "kiln images ls"`},
		{op: "resolve world@stable", wantErr: `world has no channel "stable"`},
	}
	for _, st := range steps {
		f := strings.Fields(st.op)
		var got string
		var err error
		switch f[0] {
		case "tag":
			err = s.Tag(mustParse(t, f[1]), f[2])
		case "undo":
			var r Ref
			r, err = s.UndoTag(f[1], f[2])
			if err == nil {
				got = r.String()
			}
		case "resolve":
			var m Manifest
			m, err = s.Resolve(mustParse(t, f[1]))
			if err == nil {
				got = m.Ref().String()
			}
		}
		if st.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), st.wantErr) {
				t.Errorf("%s: error %v, want one containing %q", st.op, err, st.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", st.op, err)
		} else if got != st.want {
			t.Errorf("%s = %q, want %q", st.op, got, st.want)
		}
	}

	chans, err := s.Channels("hello")
	if err != nil {
		t.Fatal(err)
	}
	if len(chans) != 2 || chans[0].Name != "beta" || chans[1].Name != "stable" {
		t.Fatalf("Channels = %+v, want beta and stable", chans)
	}
	if c := chans[1]; c.Current != "1.0.0" || !slices.Equal(channelVersions(c), []string{"1.0.0"}) {
		t.Errorf("stable = %+v", c)
	}
	if c := chans[0]; c.Current != "2.0.0-rc1" || len(c.History) != 1 || c.History[0].At.IsZero() || c.History[0].At.Location().String() != "UTC" {
		t.Errorf("beta = %+v", c)
	}
	if chans, err := s.Channels("world"); err != nil || len(chans) != 0 {
		t.Errorf("Channels(world) = %v, %v; want none (latest is not stored)", chans, err)
	}
	if _, err := s.Channels("Bad"); !errors.Is(err, ErrInvalidRef) {
		t.Errorf("Channels(Bad) = %v, want ErrInvalidRef", err)
	}
	if _, err := os.Stat(filepath.Join(s.Root, "channels", "hello", "latest.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("latest was stored: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Root, "tmp")); len(entries) != 0 {
		t.Errorf("tmp not empty: %v", entries)
	}
}

func TestGetWithChannel(t *testing.T) {
	s := newStore(t)
	addFake(t, s, "hello:1", nil)
	if err := s.Tag(Ref{Name: "hello", Version: "1"}, "stable"); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Get(Ref{Name: "hello", Channel: "stable"}); err != nil || m.Version != "1" {
		t.Errorf("Get(hello@stable) = %s, %v", m.Ref(), err)
	}
	if _, err := s.Get(Ref{Name: "hello", Version: "1", Channel: "stable"}); !errors.Is(err, ErrInvalidRef) {
		t.Errorf("Get with version and channel = %v, want ErrInvalidRef", err)
	}
	// Promoting latest pins today's newest version.
	addFake(t, s, "hello:2", nil)
	if err := s.Tag(Ref{Name: "hello", Channel: Latest}, "beta"); err != nil {
		t.Fatal(err)
	}
	addFake(t, s, "hello:3", nil)
	if m, err := s.Resolve(Ref{Name: "hello", Channel: "beta"}); err != nil || m.Version != "2" {
		t.Errorf("hello@beta = %s, %v; want hello:2", m.Ref(), err)
	}
	if m, err := s.Resolve(Ref{Name: "hello", Channel: Latest}); err != nil || m.Version != "3" {
		t.Errorf("hello@latest = %s, %v; want hello:3", m.Ref(), err)
	}
}

func TestChannelHistoryBounded(t *testing.T) {
	s := newStore(t)
	addFake(t, s, "hello:1", nil)
	addFake(t, s, "hello:2", nil)
	for i := range maxChannelHistory + 10 {
		v := []string{"1", "2"}[i%2]
		if err := s.Tag(Ref{Name: "hello", Version: v}, "stable"); err != nil {
			t.Fatal(err)
		}
	}
	chans, err := s.Channels("hello")
	if err != nil || len(chans) != 1 || len(chans[0].History) != maxChannelHistory {
		t.Fatalf("Channels = %+v, %v; want one channel with %d history entries", chans, err, maxChannelHistory)
	}
}

func TestRemoveUnsetsChannels(t *testing.T) {
	s := newStore(t)
	addFake(t, s, "hello:1", nil)
	addFake(t, s, "hello:2", nil)
	for _, tag := range []struct{ v, ch string }{{"1", "stable"}, {"2", "stable"}, {"2", "beta"}, {"1", "old"}} {
		if err := s.Tag(Ref{Name: "hello", Version: tag.v}, tag.ch); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Remove(Ref{Name: "hello", Version: "2"}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Resolve(Ref{Name: "hello", Channel: "stable"})
	want := "image hello@stable not found: the version it pointed at (hello:2) was removed; tag another version into it"
	if !errors.Is(err, ErrNotFound) || err == nil || err.Error() != want {
		t.Errorf("Resolve(hello@stable) after Remove = %v, want %q", err, want)
	}
	if m, err := s.Resolve(Ref{Name: "hello", Channel: "old"}); err != nil || m.Version != "1" {
		t.Errorf("untouched channel: %s, %v", m.Ref(), err)
	}
	chans, _ := s.Channels("hello")
	for _, c := range chans {
		if c.Name == "stable" && (c.Current != "" || !slices.Equal(channelVersions(c), []string{"1", "2"})) {
			t.Errorf("stable after Remove = %+v; want unset with its history kept", c)
		}
	}
	// Undo goes back past the removed version.
	if r, err := s.UndoTag("hello", "stable"); err != nil || r.Version != "1" {
		t.Errorf("UndoTag after Remove = %v, %v", r, err)
	}
	// beta pointed only at 2: nothing earlier to go back to.
	if _, err := s.UndoTag("hello", "beta"); err == nil {
		t.Error("UndoTag(beta) succeeded")
	}
	// Undo into a removed version is refused.
	if err := s.Tag(Ref{Name: "hello", Version: "1"}, "beta"); err != nil {
		t.Fatal(err)
	}
	addFake(t, s, "hello:3", nil)
	if err := s.Tag(Ref{Name: "hello", Version: "3"}, "beta"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(Ref{Name: "hello", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UndoTag("hello", "beta"); err == nil || !strings.Contains(err.Error(), "would go back to hello:1, which is no longer in the store") {
		t.Errorf("UndoTag into a removed version = %v", err)
	}
}

func TestChannelDamage(t *testing.T) {
	s := newStore(t)
	addFake(t, s, "hello:1", nil)
	if err := s.Tag(Ref{Name: "hello", Version: "1"}, "stable"); err != nil {
		t.Fatal(err)
	}
	path := s.channelPath("hello", "stable")
	good, _ := os.ReadFile(path)
	tests := []struct {
		name, data, wantErr string
	}{
		{"not json", "{", "the store is damaged"},
		{"misfiled", strings.Replace(string(good), `"image": "hello"`, `"image": "other"`, 1), "describes other@stable"},
		{"path in version", strings.Replace(string(good), `"current": "1"`, `"current": "../../x"`, 1), "invalid current version"},
		{"path in history", strings.Replace(string(good), `"version": "1"`, `"version": "../x"`, 1), "invalid version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tt.data), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Resolve(Ref{Name: "hello", Channel: "stable"}); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Resolve = %v, want error containing %q", err, tt.wantErr)
			}
			chans, err := s.Channels("hello")
			if err == nil || len(chans) != 0 {
				t.Errorf("Channels = %v, %v; want the damage reported", chans, err)
			}
		})
	}
}
