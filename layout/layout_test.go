package layout

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The names are kiln's on-disk contract: a store, fleet or cache made by an
// earlier kiln must still be found, so a change here must be deliberate.
func TestNames(t *testing.T) {
	h := Home{Data: "/d", Cache: "/c", Runtime: "/r"}
	st := Store(h.StoreDir())
	fl := h.Fleet("web")
	vm := fl.Instance("web-1")
	w := Work("/r/build-hello-1")
	for got, want := range map[string]string{
		h.StoreDir():                "/d/images",
		st.Blob("sha256:ab"):        "/d/images/blobs/sha256/ab",
		st.Blob("ab"):               "/d/images/blobs/sha256/ab",
		st.Manifest("hello", "1.0"): "/d/images/manifests/hello/1.0.json",
		st.Log("hello", "1.0"):      "/d/images/logs/hello/1.0",
		st.Channel("hello", "beta"): "/d/images/channels/hello/beta.json",
		st.Revoked("hello", "1.0"):  "/d/images/revoked/hello/1.0.json",
		st.Lock("hello"):            "/d/images/locks/hello.lock",
		st.GCLock():                 "/d/images/locks/.gc.lock",
		st.Tmp():                    "/d/images/tmp",
		h.HostsFile():               "/d/hosts.json",
		fl.Root:                     "/d/fleets/web",
		fl.Spec():                   "/d/fleets/web/fleet.json",
		fl.State():                  "/d/fleets/web/state.json",
		fl.Socket():                 "/d/fleets/web/supervisor.sock",
		fl.Pid():                    "/d/fleets/web/supervisor.pid",
		fl.Log():                    "/d/fleets/web/supervisor.log",
		fl.Runner():                 "/d/fleets/web/runner.json",
		string(vm):                  "/d/fleets/web/instances/web-1",
		vm.Disk():                   "/d/fleets/web/instances/web-1/disk.qcow2",
		vm.Seed():                   "/d/fleets/web/instances/web-1/seed.iso",
		vm.Key():                    "/d/fleets/web/instances/web-1/id_ed25519",
		vm.KnownHosts():             "/d/fleets/web/instances/web-1/known_hosts",
		vm.Serial():                 "/d/fleets/web/instances/web-1/serial.log",
		vm.QMP():                    "/d/fleets/web/instances/web-1/qmp.sock",
		vm.Pid():                    "/d/fleets/web/instances/web-1/qemu.pid",
		vm.EFIVars():                "/d/fleets/web/instances/web-1/efivars.fd",
		h.Downloads():               "/c/downloads",
		Downloads(h.Downloads()).File("sha256", "ab"): "/c/downloads/sha256-ab",
		Downloads(h.Downloads()).List("k"):            "/c/downloads/list-k",
		h.BaseImage("bookworm", "k"):                  "/c/base/debian-bookworm-k.qcow2",
		h.AccelProbe():                                "/c/accel-probe.json",
		h.SavedStates():                               "/c/saved-states",
		SavedState("/c/saved-states/k").Meta():        "/c/saved-states/k/state.json",
		h.RunSerial("kiln-x"):                         "/c/logs/kiln-x.serial.log",
		h.Claims():                                    "/r/claims",
		w.Owner():                                     "/r/build-hello-1/kiln.owner",
		w.Kept():                                      "/r/build-hello-1/kiln.kept",
		w.BuildLog():                                  "/r/build-hello-1/build.log",
		w.BuildVM().Disk():                            "/r/build-hello-1/vm/disk.qcow2",
		w.RunVM().Disk():                              "/r/build-hello-1/disk.qcow2",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	if fl.Name() != "web" {
		t.Errorf("Name() = %q", fl.Name())
	}
}

func TestInUse(t *testing.T) {
	root := t.TempDir()
	h := Home{Data: filepath.Join(root, "d"), Cache: filepath.Join(root, "c"), Runtime: filepath.Join(root, "r")}
	for _, d := range []string{string(h.Fleet("web").Instance("web-1")), filepath.Join(h.Work(), "run-x"), filepath.Join(h.Work(), "build-app-y", "vm"), h.SavedStates() + "/k"} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	got := map[VM]Used{}
	for _, u := range h.InUse() {
		got[u.VM] = u
	}
	want := []Used{
		{VM: h.Fleet("web").Instance("web-1"), Fleet: "web", Instance: "web-1"},
		{VM: Work(filepath.Join(h.Work(), "run-x")).RunVM(), Work: "run-x"},
		{VM: Work(filepath.Join(h.Work(), "build-app-y")).BuildVM(), Work: "build-app-y"},
	}
	for _, w := range want {
		if got[w.VM] != w {
			t.Errorf("InUse has %+v for %s, want %+v", got[w.VM], w.VM, w)
		}
	}
	for vm := range got {
		if strings.HasPrefix(string(vm), h.Cache) {
			t.Errorf("a saved state is listed as in use: %s", vm)
		}
	}
}
