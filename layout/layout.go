// Package layout owns the name of every folder and file kiln keeps on disk,
// so that the code writing a file, the code reading it back, gc, crash
// recovery and tests all ask one place instead of repeating literals.
//
// The shape follows the tree. Home is the three roots (data, cache,
// runtime); each folder kiln makes is a small type (a string, or for a
// fleet a struct with its Root, as supervisor.Dirs was) whose methods name
// what it holds:
//
//	layout.Default().Fleet("web").Instance("web-1").Serial()
//	layout.Store(root).Manifest("hello", "1.0.0")
//	layout.VM(dir).Disk()
//
// A VM folder (one guest: overlay, seed, keys, QEMU's sockets and pid file)
// is the same wherever it sits: a fleet instance, a run's work folder, the
// "vm" folder of a build's work folder, a saved state. The methods only
// build paths, and Home.InUse lists the VM folders that exist (gc's roots:
// a new kind of folder is added there, so gc cannot forget it); creating and
// reading files stays with the packages that own their contents. layout
// imports nothing of kiln's.
package layout

import (
	"os"
	"path/filepath"
	"strings"
)

// Names of the files in a VM folder.
const (
	DiskFile       = "disk.qcow2"  // the copy-on-write overlay on the image
	SeedFile       = "seed.iso"    // the cloud-init NoCloud seed
	KeyFile        = "id_ed25519"  // kiln's private key for the guest
	KnownHostsFile = "known_hosts" // the guest's host key, pinned
	SerialFile     = "serial.log"  // the guest's serial console
	QMPFile        = "qmp.sock"    // QEMU's QMP socket
	PidFile        = "qemu.pid"    // written by QEMU (-pidfile)
	EFIVarsFile    = "efivars.fd"  // the UEFI variable store, a per-VM copy
)

// StoreDir is the image store's root (see Store).
func (h Home) StoreDir() string { return filepath.Join(h.Data, "images") }

// Fleets is the folder holding one folder per fleet.
func (h Home) Fleets() string { return filepath.Join(h.Data, "fleets") }

// Fleet is fleet name's folder.
func (h Home) Fleet(name string) Fleet { return Fleet{Root: filepath.Join(h.Fleets(), name)} }

// HostsFileName is the list of libvirt hosts fleets may be placed on.
const HostsFileName = "hosts.json"

// HostsFile is the list of libvirt hosts, in the data folder.
func (h Home) HostsFile() string { return filepath.Join(h.Data, HostsFileName) }

// Downloads is the cache of downloaded files, named by their checksums.
func (h Home) Downloads() string { return filepath.Join(h.Cache, "downloads") }

// Downloads is the download cache's folder (Home.Downloads).
type Downloads string

// File is the verified download whose checksum is algo:hex.
func (d Downloads) File(algo, hex string) string { return filepath.Join(string(d), algo+"-"+hex) }

// List is a kept checksum list, named by a digest of its URL.
func (d Downloads) List(key string) string { return filepath.Join(string(d), "list-"+key) }

// DownloadTmpPattern names the files a download streams into before it is
// verified (os.CreateTemp's pattern; a glob of leftovers too).
const DownloadTmpPattern = "tmp-*"

// BaseImages is the cache of base images made by `kiln base`.
func (h Home) BaseImages() string { return filepath.Join(h.Cache, "base") }

// BaseImage is the cached base image of a Debian suite made from inputs
// whose digest is key.
func (h Home) BaseImage(suite, key string) string {
	return filepath.Join(h.BaseImages(), "debian-"+suite+"-"+key+".qcow2")
}

// AccelProbe records which accelerator really runs a guest on this machine.
func (h Home) AccelProbe() string { return filepath.Join(h.Cache, "accel-probe.json") }

// SavedStates is the folder of saved booted guests (warm starts), one
// SavedState folder per key.
func (h Home) SavedStates() string { return filepath.Join(h.Cache, "saved-states") }

// RunLogs holds the serial logs of `kiln run`, kept outside the run folder
// so they survive a failed boot.
func (h Home) RunLogs() string { return filepath.Join(h.Cache, "logs") }

// RunSerial is the serial log of the run whose guest is called name.
func (h Home) RunSerial(name string) string { return filepath.Join(h.RunLogs(), name+"."+SerialFile) }

// Work is the folder of work folders: one per `kiln run` (RunPrefix) or
// build (BuildPrefix), each owned by the kiln process that made it.
func (h Home) Work() string { return h.Runtime }

// Claims holds the exclusive claims (one build per name:version).
func (h Home) Claims() string { return filepath.Join(h.Runtime, "claims") }

// Prefixes of work folders' names (the rest is random).
const (
	RunPrefix = "run" // run-XXXX: a VM folder itself
)

// BuildPrefix is the prefix of a build's work folder for image name.
func BuildPrefix(name string) string { return "build-" + name }

// Store is the image store's root.
type Store string

// Blobs holds the images, named by their sha256 hex digests.
func (s Store) Blobs() string { return filepath.Join(string(s), "blobs", "sha256") }

// Blob is the file of the blob with digest "sha256:HEX" (or just HEX).
func (s Store) Blob(digest string) string {
	return filepath.Join(s.Blobs(), strings.TrimPrefix(digest, "sha256:"))
}

// Manifests holds one folder per image name, one NAME/VERSION.json each.
func (s Store) Manifests() string { return filepath.Join(string(s), "manifests") }

// ManifestsOf is image name's folder of manifests.
func (s Store) ManifestsOf(name string) string { return filepath.Join(s.Manifests(), name) }

// Manifest is the manifest of name:version.
func (s Store) Manifest(name, version string) string {
	return filepath.Join(s.ManifestsOf(name), version+".json")
}

// Logs holds the build logs, one folder per NAME/VERSION.
func (s Store) Logs() string { return filepath.Join(string(s), "logs") }

// Log is the folder of name:version's build logs.
func (s Store) Log(name, version string) string { return filepath.Join(s.Logs(), name, version) }

// Channels is image name's folder of channels (hello@stable).
func (s Store) Channels(name string) string { return filepath.Join(string(s), "channels", name) }

// Channel is the history of name@channel.
func (s Store) Channel(name, channel string) string {
	return filepath.Join(s.Channels(name), channel+".json")
}

// Revoked marks name:version revoked.
func (s Store) Revoked(name, version string) string {
	return filepath.Join(string(s), "revoked", name, version+".json")
}

// Locks holds the per-name locks.
func (s Store) Locks() string { return filepath.Join(string(s), "locks") }

// Lock is image name's lock.
func (s Store) Lock(name string) string { return filepath.Join(s.Locks(), name+".lock") }

// GCLock is the lock gc takes against adds.
func (s Store) GCLock() string { return filepath.Join(s.Locks(), ".gc.lock") }

// Tmp holds files being written into the store, renamed into place whole.
func (s Store) Tmp() string { return filepath.Join(string(s), "tmp") }

// Fleet is one fleet's folder, Root.
type Fleet struct{ Root string }

// Name is the fleet's name.
func (f Fleet) Name() string { return filepath.Base(f.Root) }

// Spec is the fleet's desired state.
func (f Fleet) Spec() string { return filepath.Join(f.Root, "fleet.json") }

// State is the supervisor's persisted state.
func (f Fleet) State() string { return filepath.Join(f.Root, "state.json") }

// Socket is the supervisor's API socket.
func (f Fleet) Socket() string { return filepath.Join(f.Root, "supervisor.sock") }

// Pid is the supervisor's pid file.
func (f Fleet) Pid() string { return filepath.Join(f.Root, "supervisor.pid") }

// Log is the supervisor's log.
func (f Fleet) Log() string { return filepath.Join(f.Root, "supervisor.log") }

// Runner says what keeps the supervisor running (systemd unit or monitor).
func (f Fleet) Runner() string { return filepath.Join(f.Root, "runner.json") }

// Instances holds one VM folder per instance.
func (f Fleet) Instances() string { return filepath.Join(f.Root, "instances") }

// Instance is instance id's VM folder.
func (f Fleet) Instance(id string) VM { return VM(filepath.Join(f.Instances(), id)) }

// VM is one guest's folder.
type VM string

func (v VM) join(name string) string { return filepath.Join(string(v), name) }

// Disk is the guest's overlay.
func (v VM) Disk() string { return v.join(DiskFile) }

// Seed is the guest's cloud-init seed.
func (v VM) Seed() string { return v.join(SeedFile) }

// Key is kiln's private key for the guest.
func (v VM) Key() string { return v.join(KeyFile) }

// KnownHosts pins the guest's host key.
func (v VM) KnownHosts() string { return v.join(KnownHostsFile) }

// Serial is the guest's serial log.
func (v VM) Serial() string { return v.join(SerialFile) }

// QMP is QEMU's QMP socket.
func (v VM) QMP() string { return v.join(QMPFile) }

// Pid is QEMU's pid file.
func (v VM) Pid() string { return v.join(PidFile) }

// EFIVars is the guest's UEFI variable store.
func (v VM) EFIVars() string { return v.join(EFIVarsFile) }

// Work is a work folder under Home.Work: a run's or a build's.
type Work string

// Owner records the kiln process that made the folder ("<pid> <start>").
func (w Work) Owner() string { return filepath.Join(string(w), "kiln.owner") }

// Kept is present when the folder is kept on purpose (--on-error=abort).
func (w Work) Kept() string { return filepath.Join(string(w), "kiln.kept") }

// RunVM is the guest of a run's work folder: the folder itself.
func (w Work) RunVM() VM { return VM(w) }

// BuildVM is the guest of a build's work folder.
func (w Work) BuildVM() VM { return VM(filepath.Join(string(w), "vm")) }

// VMs are the VM folders a work folder can hold: a run's (the folder
// itself) and a build's.
func (w Work) VMs() []VM { return []VM{w.RunVM(), w.BuildVM()} }

// BuildLog is a build's log while it runs.
func (w Work) BuildLog() string { return filepath.Join(string(w), BuildLogFile) }

// SavedState is one saved booted guest's folder under Home.SavedStates: a
// VM folder (Disk holds the snapshot; Seed, KnownHosts and Key as at the
// save) plus its description.
type SavedState string

// VM is the state's guest files.
func (s SavedState) VM() VM { return VM(s) }

// SavedStateMetaFile is a saved state's description, written last.
const SavedStateMetaFile = "state.json"

// Meta is the state's description.
func (s SavedState) Meta() string { return filepath.Join(string(s), SavedStateMetaFile) }

// BuildLogFile is a build's log, in its work folder and in the store.
const BuildLogFile = "build.log"

// Used is a VM folder found on disk whose disk may be an overlay on a stored
// image, and what it belongs to: a fleet's instance, or a run's or build's
// work folder.
type Used struct {
	VM       VM
	Fleet    string // the fleet, for an instance
	Instance string // the instance's id
	Work     string // the work folder's name (run-…, build-…), for a run or build
}

// InUse lists every VM folder that can hold a root of the image store (gc
// and rm keep the images their disks are backed by): each fleet's
// instances and each work folder's VMs. A new kind of VM folder is added
// here, so gc cannot forget it. Saved states are not roots: they are
// dropped with the image they were saved on.
func (h Home) InUse() []Used {
	var out []Used
	fleets, _ := os.ReadDir(h.Fleets())
	for _, f := range fleets {
		fl := h.Fleet(f.Name())
		insts, _ := os.ReadDir(fl.Instances())
		for _, in := range insts {
			out = append(out, Used{VM: fl.Instance(in.Name()), Fleet: f.Name(), Instance: in.Name()})
		}
	}
	work, _ := os.ReadDir(h.Work())
	for _, w := range work {
		if !w.IsDir() {
			continue
		}
		for _, vm := range Work(filepath.Join(h.Work(), w.Name())).VMs() {
			out = append(out, Used{VM: vm, Work: w.Name()})
		}
	}
	return out
}
