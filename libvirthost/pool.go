package libvirthost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
)

// PoolName is the storage pool kiln keeps its volumes in on every host, so
// `virsh vol-list kiln` shows all of them and nothing else's.
const PoolName = "kiln"

// PoolDir is where kiln's pool lives when kiln has to create it.
const PoolDir = "/var/lib/libvirt/images/kiln"

// verifiedSuffix names the marker volume written after a layer's upload was
// verified. libvirt cannot rename a volume, so a layer uploads under its
// final name and the marker says it is whole: a layer without its marker
// (an upload cut short) is removed and uploaded again.
const verifiedSuffix = ".verified"

// LayerVolume is the name of the volume holding the blob digest: its bare
// hex, the very name the store's qcow2 overlays use as their relative
// backing file, so a chain uploaded into one pool resolves there as it does
// in the store.
func LayerVolume(digest string) (string, error) {
	hexDigest, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexDigest) != 64 {
		return "", fmt.Errorf("digest %q is not sha256:<64 hex>", digest)
	}
	if _, err := hex.DecodeString(hexDigest); err != nil || strings.ToLower(hexDigest) != hexDigest {
		return "", fmt.Errorf("digest %q is not sha256:<64 lower-case hex>", digest)
	}
	return hexDigest, nil
}

// Pool is kiln's storage pool on one host.
type Pool struct {
	c    *Conn
	pool libvirt.StoragePool
	Name string
	Path string // the pool's folder on the host
}

// EnsurePool finds kiln's pool on the host, or defines, builds and starts a
// directory pool at PoolDir when there is none, and refreshes it.
func (c *Conn) EnsurePool() (*Pool, error) { return c.EnsurePoolAt(PoolName, PoolDir) }

// EnsurePoolAt is EnsurePool for the pool called name, made at dir when
// missing.
func (c *Conn) EnsurePoolAt(name, dir string) (*Pool, error) {
	p, err := c.lv.StoragePoolLookupByName(name)
	if err != nil {
		if !notFound(err) {
			return nil, c.hostErr("storage pool %s: %w", name, err)
		}
		x, merr := (&libvirtxml.StoragePool{Type: "dir", Name: name, Target: &libvirtxml.StoragePoolTarget{Path: dir}}).Marshal()
		if merr != nil {
			return nil, merr
		}
		if p, err = c.lv.StoragePoolDefineXML(x, 0); err != nil {
			return nil, c.hostErr("define storage pool %s at %s: %w", name, dir, err)
		}
		if err := c.lv.StoragePoolBuild(p, 0); err != nil {
			c.lv.StoragePoolUndefine(p)
			return nil, c.hostErr("build storage pool %s at %s: %w", name, dir, err)
		}
		c.lv.StoragePoolSetAutostart(p, 1)
	}
	if active, err := c.lv.StoragePoolIsActive(p); err != nil {
		return nil, c.hostErr("storage pool %s: %w", name, err)
	} else if active == 0 {
		if err := c.lv.StoragePoolCreate(p, 0); err != nil {
			return nil, c.hostErr("start storage pool %s: %w", name, err)
		}
	}
	if err := c.lv.StoragePoolRefresh(p, 0); err != nil {
		return nil, c.hostErr("refresh storage pool %s: %w", name, err)
	}
	x, err := c.lv.StoragePoolGetXMLDesc(p, 0)
	if err != nil {
		return nil, c.hostErr("storage pool %s: %w", name, err)
	}
	var px libvirtxml.StoragePool
	if err := px.Unmarshal(x); err != nil {
		return nil, c.hostErr("storage pool %s: %w", name, err)
	}
	pool := &Pool{c: c, pool: p, Name: name}
	if px.Target != nil {
		pool.Path = px.Target.Path
	}
	return pool, nil
}

// Available is the free space in the pool, in bytes.
func (p *Pool) Available() (uint64, error) {
	_, _, _, avail, err := p.c.lv.StoragePoolGetInfo(p.pool)
	if err != nil {
		return 0, p.c.hostErr("storage pool %s: %w", p.Name, err)
	}
	return avail, nil
}

// lookup returns the volume called name, or ok=false when there is none.
func (p *Pool) lookup(name string) (libvirt.StorageVol, bool, error) {
	v, err := p.c.lv.StorageVolLookupByName(p.pool, name)
	if notFound(err) {
		return v, false, nil
	}
	if err != nil {
		return v, false, p.c.hostErr("volume %s: %w", name, err)
	}
	return v, true, nil
}

// VolumePath returns the host's path of the volume called name.
func (p *Pool) VolumePath(name string) (string, error) {
	v, ok, err := p.lookup(name)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", p.c.hostErr("no volume %s in pool %s", name, p.Name)
	}
	path, err := p.c.lv.StorageVolGetPath(v)
	if err != nil {
		return "", p.c.hostErr("volume %s: %w", name, err)
	}
	return path, nil
}

// DeleteVolume removes the volume called name; a missing one is no error.
func (p *Pool) DeleteVolume(name string) error {
	v, ok, err := p.lookup(name)
	if err != nil || !ok {
		return err
	}
	if err := p.c.lv.StorageVolDelete(v, 0); err != nil && !notFound(err) {
		return p.c.hostErr("delete volume %s: %w", name, err)
	}
	return nil
}

// Volumes lists the names of the pool's volumes.
func (p *Pool) Volumes() ([]string, error) {
	if err := p.c.lv.StoragePoolRefresh(p.pool, 0); err != nil {
		return nil, p.c.hostErr("refresh storage pool %s: %w", p.Name, err)
	}
	vols, _, err := p.c.lv.StoragePoolListAllVolumes(p.pool, 1, 0)
	if err != nil {
		return nil, p.c.hostErr("list volumes: %w", err)
	}
	names := make([]string, len(vols))
	for i, v := range vols {
		names[i] = v.Name
	}
	return names, nil
}

// Layer is one blob of an image's chain.
type Layer struct {
	Digest        string // sha256:<hex> of the blob
	Path          string // the blob in the local store
	Format        string // qcow2 or raw
	Size          int64  // file size
	VirtualSize   int64
	BackingDigest string // the layer below, "" for the base
}

// Chain lists the blobs m's image needs, base first: the version's own blob
// and, for a layered version, each blob it is an overlay on.
func Chain(store *images.Store, m images.Manifest) ([]Layer, error) {
	all, err := store.List()
	if err != nil {
		return nil, err
	}
	byDigest := map[string]images.Manifest{}
	for _, o := range all {
		byDigest[o.Digest] = o
	}
	var chain []Layer
	seen := map[string]bool{}
	for cur := m; ; {
		if seen[cur.Digest] {
			return nil, fmt.Errorf("image %s: its backing chain loops at %s", m.Ref(), cur.Digest)
		}
		seen[cur.Digest] = true
		st, err := os.Stat(store.BlobPath(cur.Digest))
		if err != nil {
			return nil, fmt.Errorf("image %s: blob %s: %w", m.Ref(), cur.Digest, err)
		}
		chain = append([]Layer{{
			Digest: cur.Digest, Path: store.BlobPath(cur.Digest), Format: cur.Format,
			Size: st.Size(), VirtualSize: cur.VirtualSize, BackingDigest: cur.BackingDigest,
		}}, chain...)
		if cur.BackingDigest == "" {
			return chain, nil
		}
		next, ok := byDigest[cur.BackingDigest]
		if !ok {
			return nil, fmt.Errorf("image %s: no stored version has its backing blob %s", m.Ref(), cur.BackingDigest)
		}
		cur = next
	}
}

// Transfer counts what EnsureChain moved.
type Transfer struct {
	Uploaded  []string // digests uploaded now
	Reused    []string // digests already in the pool, verified earlier
	BytesSent int64    // bytes uploaded
	BytesRead int64    // bytes downloaded back to verify them
}

// EnsureChain makes every layer of chain (base first) present and verified
// in the pool: a layer already there with its verified marker is reused;
// otherwise it is uploaded with libvirt's volume upload, downloaded again
// and hashed, and marked verified only when the digest matches. Space is
// checked first, so a full pool fails before any byte moves.
func (p *Pool) EnsureChain(ctx context.Context, chain []Layer) (Transfer, error) {
	var t Transfer
	var need uint64
	var todo []Layer
	for _, l := range chain {
		name, err := LayerVolume(l.Digest)
		if err != nil {
			return t, err
		}
		_, have, err := p.lookup(name + verifiedSuffix)
		if err != nil {
			return t, err
		}
		if have {
			if _, whole, err := p.lookup(name); err != nil {
				return t, err
			} else if whole {
				t.Reused = append(t.Reused, l.Digest)
				continue
			}
		}
		todo = append(todo, l)
		need += uint64(l.Size)
	}
	if len(todo) == 0 {
		return t, nil
	}
	avail, err := p.Available()
	if err != nil {
		return t, err
	}
	if need > avail {
		return t, p.c.hostErr("storage pool %s has %s free, the image's layers need %s: free space on the host or point the pool elsewhere",
			p.Name, disk.FormatSize(int64(avail)), disk.FormatSize(int64(need)))
	}
	for _, l := range todo {
		if err := ctx.Err(); err != nil {
			return t, err
		}
		sent, read, err := p.upload(ctx, l)
		t.BytesSent += sent
		t.BytesRead += read
		if err != nil {
			return t, err
		}
		t.Uploaded = append(t.Uploaded, l.Digest)
	}
	return t, nil
}

// upload puts one layer into the pool under its digest's name and verifies
// it by reading it back.
func (p *Pool) upload(ctx context.Context, l Layer) (sent, read int64, err error) {
	name, _ := LayerVolume(l.Digest)
	// A layer without its marker is an upload cut short: start over.
	if err := p.DeleteVolume(name); err != nil {
		return 0, 0, err
	}
	x, err := (&libvirtxml.StorageVolume{
		Name:     name,
		Capacity: &libvirtxml.StorageVolumeSize{Value: uint64(l.Size)},
		// raw: libvirt then makes a plain file of the blob's size for the
		// bytes to land in, instead of a fresh qcow2 of its own.
		Target: &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "raw"}},
	}).Marshal()
	if err != nil {
		return 0, 0, err
	}
	vol, err := p.c.lv.StorageVolCreateXML(p.pool, x, 0)
	if err != nil {
		return 0, 0, p.c.hostErr("create volume %s: %w", name, err)
	}
	fail := func(e error) (int64, int64, error) {
		p.c.lv.StorageVolDelete(vol, 0)
		return sent, read, e
	}
	f, err := os.Open(l.Path)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	cr := &countingReader{ctx: ctx, r: f}
	err = p.c.lv.StorageVolUpload(vol, cr, 0, uint64(l.Size), 0)
	sent = cr.n
	if err != nil {
		return fail(p.c.hostErr("upload %s to volume %s: %w", l.Digest, name, err))
	}
	read, got, err := p.readBack(ctx, vol, l)
	if err != nil {
		return fail(p.c.hostErr("read back volume %s: %w", name, err))
	}
	if got != l.Digest || read != l.Size {
		return fail(p.c.hostErr("volume %s holds %d bytes with digest %s after upload, not %d bytes of %s: the upload was damaged; try again",
			name, read, got, l.Size, l.Digest))
	}
	mx, _ := (&libvirtxml.StorageVolume{
		Name:     name + verifiedSuffix,
		Capacity: &libvirtxml.StorageVolumeSize{Value: 0},
		Target:   &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "raw"}},
	}).Marshal()
	if _, err := p.c.lv.StorageVolCreateXML(p.pool, mx, 0); err != nil {
		return fail(p.c.hostErr("mark volume %s verified: %w", name, err))
	}
	return sent, read, nil
}

// readBackTries bounds how often a read-back that disagrees is repeated.
// libvirtd may still be writing an upload's last packets when the client
// library returns, and go-libvirt ends a download at the first empty packet
// (seen on a loaded CI machine: 0 bytes read back right after an upload), so
// a mismatch is read again after a pause; a volume that is really damaged
// disagrees every time and fails.
const readBackTries = 7

// readBackTimeout bounds one read-back of size bytes: half a minute plus
// 5 MiB/s, far slower than any link kiln would upload over.
func readBackTimeout(size int64) time.Duration {
	return 30*time.Second + time.Duration(size/(5<<20))*time.Second
}

// readBack reads the volume and returns how many bytes it holds and their
// digest, repeating a read that disagrees with the layer (or fails) a few
// times.
func (p *Pool) readBack(ctx context.Context, vol libvirt.StorageVol, l Layer) (read int64, digest string, err error) {
	pause := 100 * time.Millisecond
	for try := 1; ; try++ {
		read, digest, err = p.downloadOnce(ctx, vol, l.Size)
		if (err == nil && digest == l.Digest && read == l.Size) || try == readBackTries {
			return read, digest, err
		}
		select {
		case <-ctx.Done():
			return read, digest, ctx.Err()
		case <-time.After(pause):
		}
		pause *= 2
	}
}

// downloadOnce reads size bytes of the volume over a connection of its own,
// within readBackTimeout. Its own, because a stream that go-libvirt ends
// early can leave packets for it that wedge the whole connection (its
// router blocks on the finished call while holding its lock): a read-back
// must never take the host's main connection down with it, nor hang.
func (p *Pool) downloadOnce(ctx context.Context, vol libvirt.StorageVol, size int64) (int64, string, error) {
	ctx, cancel := context.WithTimeout(ctx, readBackTimeout(size))
	defer cancel()
	c, err := Dial(ctx, p.c.Host)
	if err != nil {
		return 0, "", err
	}
	type result struct {
		n      int64
		digest string
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		h := sha256.New()
		cw := &countingWriter{w: h}
		err := c.lv.StorageVolDownload(vol, cw, 0, uint64(size), 0)
		ch <- result{cw.n, "sha256:" + hex.EncodeToString(h.Sum(nil)), err}
	}()
	select {
	case r := <-ch:
		go c.Close() // Disconnect asks the daemon first: nobody waits for it
		return r.n, r.digest, r.err
	case <-ctx.Done():
		go c.Close()
		return 0, "", fmt.Errorf("no answer within %s: %w", readBackTimeout(size), ctx.Err())
	}
}

// RemoveLayer deletes a layer's volume and its marker (marker first, so a
// crash in between leaves a layer that will be uploaded again).
func (p *Pool) RemoveLayer(digest string) error {
	name, err := LayerVolume(digest)
	if err != nil {
		return err
	}
	return errors.Join(p.DeleteVolume(name+verifiedSuffix), p.DeleteVolume(name))
}

// countingReader counts what passes and ends the stream when ctx is done
// (libvirt's upload call itself cannot be cancelled).
type countingReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
