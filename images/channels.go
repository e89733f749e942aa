package images

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/fileutil"
)

// maxChannelHistory bounds a channel's history so its file stays small; the
// oldest entries are dropped first.
const maxChannelHistory = 100

// Channel is a named, movable pointer to one version of an image, like a
// registry tag: hello@stable. Tag moves it and records where it pointed, so
// UndoTag can move it back.
type Channel struct {
	Name string `json:"name"` // e.g. "stable"
	// Current is the version it points at, or "" once that version was
	// removed (the channel then resolves to nothing until tagged again).
	Current string `json:"current"`
	// History is every version the channel pointed at, oldest first; the
	// last entry is the current one (or the removed one, when Current is "").
	History []ChannelEntry `json:"history"`
}

// ChannelEntry is one move of a channel.
type ChannelEntry struct {
	Version string    `json:"version"`
	At      time.Time `json:"at"`
}

// channelFile is a channel's on-disk form, channels/<name>/<channel>.json.
// The image and channel names are repeated inside so a misfiled or copied
// file is detected as damage rather than trusted.
type channelFile struct {
	Image   string         `json:"image"`
	Channel string         `json:"channel"`
	Current string         `json:"current"`
	History []ChannelEntry `json:"history"`
}

func (s *Store) channelDir(name string) string {
	return s.layout().Channels(name)
}

func (s *Store) channelPath(name, channel string) string {
	return s.layout().Channel(name, channel)
}

func invalidChannel(channel, reason string) error {
	return &kindError{fmt.Sprintf("invalid channel %q: %s", channel, reason), ErrInvalidRef}
}

// checkNameChannel validates an image name and a channel given separately.
func checkNameChannel(name, channel string) error {
	if reason := checkName(name); reason != "" {
		return &kindError{fmt.Sprintf("invalid image name %q: %s", name, reason), ErrInvalidRef}
	}
	if reason := checkChannel(channel); reason != "" {
		return invalidChannel(channel, reason)
	}
	return nil
}

// Tag points channel at the version ref names, creating the channel if
// needed and recording the move in its history. ref is name:version, or a
// channel to promote (Tag(hello@beta, "stable") points stable where beta
// points now). The version must be in the store. Tagging the version the
// channel already points at changes nothing. "latest" is built in and
// cannot be tagged.
func (s *Store) Tag(ref Ref, channel string) error {
	if err := ref.validate(false); err != nil {
		return err
	}
	if err := checkNameChannel(ref.Name, channel); err != nil {
		return err
	}
	if channel == Latest {
		return fmt.Errorf("%s@latest is built in and always means the newest version of %s; tag another channel, e.g. %s@stable", ref.Name, ref.Name, ref.Name)
	}
	if ref.Version == "" && ref.Channel == "" {
		return fmt.Errorf("tagging %s@%s needs a version, e.g. %s:1.0.0 (or a channel to promote, e.g. %s@beta)", ref.Name, channel, ref.Name, ref.Name)
	}
	target := ref
	if ref.Channel != "" {
		// Resolved before taking the lock: Resolve only reads, and the lock
		// is not reentrant.
		m, err := s.Resolve(ref)
		if err != nil {
			return err
		}
		target = m.Ref()
	}
	if err := s.init(); err != nil {
		return err
	}
	unlock, err := s.Lock(ref.Name)
	if err != nil {
		return err
	}
	defer unlock()
	// Checked under the lock, which Remove takes too: a channel never
	// points at a version that is being removed.
	if !s.hasManifest(target) {
		return notFound(target)
	}
	cf, err := s.readChannel(ref.Name, channel)
	if errors.Is(err, os.ErrNotExist) {
		cf = channelFile{Image: ref.Name, Channel: channel}
	} else if err != nil {
		return err
	}
	if cf.Current == target.Version {
		return nil
	}
	cf.Current = target.Version
	cf.History = append(cf.History, ChannelEntry{Version: target.Version, At: time.Now().UTC()})
	if n := len(cf.History); n > maxChannelHistory {
		cf.History = slices.Clone(cf.History[n-maxChannelHistory:])
	}
	return s.writeChannel(cf)
}

// UndoTag moves channel back one step in its history, to the version it
// pointed at before the last Tag, and returns that version. The undone move
// is dropped from the history. It fails when there is no earlier version or
// the earlier version is no longer in the store.
func (s *Store) UndoTag(name, channel string) (previous Ref, err error) {
	if err := checkNameChannel(name, channel); err != nil {
		return Ref{}, err
	}
	if channel == Latest {
		return Ref{}, fmt.Errorf("%s@latest is built in and always means the newest version; there is nothing to undo", name)
	}
	if err := s.init(); err != nil {
		return Ref{}, err
	}
	unlock, err := s.Lock(name)
	if err != nil {
		return Ref{}, err
	}
	defer unlock()
	cf, err := s.readChannel(name, channel)
	if errors.Is(err, os.ErrNotExist) {
		return Ref{}, &kindError{fmt.Sprintf("%s@%s has never been tagged; there is nothing to undo", name, channel), ErrNotFound}
	}
	if err != nil {
		return Ref{}, err
	}
	n := len(cf.History)
	if n < 2 {
		return Ref{}, fmt.Errorf("%s@%s has no earlier version to go back to", name, channel)
	}
	prev := Ref{Name: name, Version: cf.History[n-2].Version}
	if !s.hasManifest(prev) {
		return Ref{}, &kindError{fmt.Sprintf("%s@%s would go back to %s, which is no longer in the store; tag a version instead", name, channel, prev), ErrNotFound}
	}
	cf.History = cf.History[:n-1]
	cf.Current = prev.Version
	if err := s.writeChannel(cf); err != nil {
		return Ref{}, err
	}
	return prev, nil
}

// Channels returns the stored channels of an image name, sorted by channel
// name; "latest" is built in and not among them. Channel files that cannot
// be read are left out and reported together in the error, as in List.
func (s *Store) Channels(name string) ([]Channel, error) {
	if reason := checkName(name); reason != "" {
		return nil, &kindError{fmt.Sprintf("invalid image name %q: %s", name, reason), ErrInvalidRef}
	}
	entries, err := os.ReadDir(s.channelDir(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Channel
	var errs []error
	for _, e := range entries {
		channel, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || checkChannel(channel) != "" || stranger(s.channelDir(name), e) {
			continue
		}
		cf, err := s.readChannel(name, channel)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, Channel{Name: cf.Channel, Current: cf.Current, History: cf.History})
	}
	slices.SortFunc(out, func(a, b Channel) int { return cmp.Compare(a.Name, b.Name) })
	return out, errors.Join(errs...)
}

// resolveChannel returns the manifest name@channel points at.
func (s *Store) resolveChannel(r Ref) (Manifest, error) {
	if r.Channel == Latest {
		m, err := s.Resolve(Ref{Name: r.Name})
		if errors.Is(err, ErrNotFound) {
			return Manifest{}, notFound(r)
		}
		return m, err
	}
	cf, err := s.readChannel(r.Name, r.Channel)
	if errors.Is(err, os.ErrNotExist) {
		return Manifest{}, &kindError{fmt.Sprintf("image %s not found: %s has no channel %q; tag a version into it first", r, r.Name, r.Channel), ErrNotFound}
	}
	if err != nil {
		return Manifest{}, err
	}
	if cf.Current == "" {
		msg := fmt.Sprintf("image %s not found: the version it pointed at was removed; tag another version into it", r)
		if n := len(cf.History); n > 0 {
			msg = fmt.Sprintf("image %s not found: the version it pointed at (%s:%s) was removed; tag another version into it", r, r.Name, cf.History[n-1].Version)
		}
		return Manifest{}, &kindError{msg, ErrNotFound}
	}
	v := Ref{Name: r.Name, Version: cf.Current}
	m, err := s.Get(v)
	if errors.Is(err, ErrNotFound) {
		return Manifest{}, &kindError{fmt.Sprintf("image %s not found: it points at %s, which is not in the store any more; tag another version into it", r, v), ErrNotFound}
	}
	return m, err
}

// readChannel reads and checks one channel file; a missing one gives an
// error matching os.ErrNotExist.
func (s *Store) readChannel(name, channel string) (channelFile, error) {
	path := s.channelPath(name, channel)
	f, err := fileutil.OpenRegular(path)
	if err != nil {
		return channelFile{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return channelFile{}, fmt.Errorf("reading channel %s: %w", path, err)
	}
	damaged := func(why string) (channelFile, error) {
		return channelFile{}, fmt.Errorf("channel %s: %s; the store is damaged (tag the channel again to repair it)", path, why)
	}
	if len(data) > maxManifestSize {
		return damaged("file too large")
	}
	var cf channelFile
	if err := json.Unmarshal(data, &cf); err != nil {
		return damaged(err.Error())
	}
	if cf.Image != name || cf.Channel != channel {
		return damaged(fmt.Sprintf("it describes %s@%s, not %s@%s", cf.Image, cf.Channel, name, channel))
	}
	// Versions become manifest paths: never trust them unchecked.
	if cf.Current != "" && checkVersion(cf.Current) != "" {
		return damaged(fmt.Sprintf("invalid current version %q", cf.Current))
	}
	for _, e := range cf.History {
		if reason := checkVersion(e.Version); reason != "" {
			return damaged(fmt.Sprintf("invalid version %q in its history", e.Version))
		}
	}
	return cf, nil
}

// writeChannel stores cf atomically. The caller holds the name lock.
func (s *Store) writeChannel(cf channelFile) error {
	if cf.History == nil {
		cf.History = []ChannelEntry{}
	}
	data, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return err
	}
	dir := s.channelDir(cf.Image)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing channel %s@%s: %w", cf.Image, cf.Channel, err)
	}
	if err := writeFileAtomic(s.tmpDir(), s.channelPath(cf.Image, cf.Channel), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing channel %s@%s: %w", cf.Image, cf.Channel, err)
	}
	return nil
}

// clearChannels unsets every channel of r.Name that points at r.Version,
// keeping their history. The caller holds the name lock.
func (s *Store) clearChannels(r Ref) error {
	entries, err := os.ReadDir(s.channelDir(r.Name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		channel, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || checkChannel(channel) != "" {
			continue
		}
		cf, err := s.readChannel(r.Name, channel)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if cf.Current != r.Version {
			continue
		}
		cf.Current = ""
		if err := s.writeChannel(cf); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
