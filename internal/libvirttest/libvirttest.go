// Package libvirttest starts private libvirt daemons that play "hosts" for
// tests, through scripts/libvirt-host.sh: each with its own configuration,
// run, state and log folders and host UUID, reachable over qemu+tcp, and,
// when isolated, in a network namespace of its own joined to this one by a
// veth pair, as a second machine would be. It needs root and Debian's
// libvirt-daemon, libvirt-daemon-driver-qemu and libvirt-clients.
package libvirttest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Daemon is one running test host.
type Daemon struct {
	Name  string
	Root  string // its folders; its log is Root/log/libvirtd.log
	Addr  string // where its libvirtd listens
	Port  int
	URI   string // qemu+tcp://Addr:Port/system
	Netns string // its network namespace, "" = this one
	veth  string
}

// script is scripts/libvirt-host.sh of this source tree.
func script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", "libvirt-host.sh")
}

// Available says why test hosts cannot be started here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("test libvirt hosts need root")
	}
	for _, tool := range []string{"libvirtd", "virtlogd", "virsh", "unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, serr := os.Stat("/usr/sbin/" + tool); serr != nil {
				return fmt.Errorf("%s is not installed (apt-get install --no-install-recommends libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients iproute2)", tool)
			}
		}
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"); err != nil {
		if _, err := os.Stat("/usr/lib/libvirt/connection-driver/libvirt_driver_qemu.so"); err != nil {
			return errors.New("libvirt's QEMU driver is not installed (apt-get install --no-install-recommends libvirt-daemon-driver-qemu)")
		}
	}
	return nil
}

// Start starts a test host called name with its folders under root. An
// isolated host runs in a new network namespace.
func Start(root, name string, isolated bool) (_ *Daemon, err error) {
	d := &Daemon{Name: name, Root: filepath.Join(root, name), Addr: "127.0.0.1"}
	defer func() {
		if err != nil {
			d.Stop()
		}
	}()
	if isolated {
		if err := d.makeNetns(); err != nil {
			return nil, err
		}
	}
	if d.Port, err = freePort(d.Addr); err != nil {
		return nil, err
	}
	d.URI = fmt.Sprintf("qemu+tcp://%s:%d/system", d.Addr, d.Port)
	args := []string{script(), "start", d.Root, d.Addr, strconv.Itoa(d.Port)}
	if d.Netns != "" {
		args = append(args, d.Netns)
	}
	if out, err := exec.Command("sh", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("start test libvirt host %s: %v\n%s", name, err, out)
	}
	return d, nil
}

// makeNetns creates a network namespace and a veth pair with a /30 on a
// random 10.x.y.0 network, the host's end inside it.
func (d *Daemon) makeNetns() error {
	id := fmt.Sprintf("%d%03d", os.Getpid()%100000, rand.IntN(1000))
	d.Netns = "kiln-lvt-" + id
	d.veth = "klv" + id[len(id)-min(len(id), 8):]
	net := fmt.Sprintf("10.%d.%d", 200+rand.IntN(50), rand.IntN(250))
	peer := d.veth + "p"
	d.Addr = net + ".2"
	for _, c := range [][]string{
		{"netns", "add", d.Netns},
		{"link", "add", d.veth, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", d.Netns},
		{"addr", "add", net + ".1/30", "dev", d.veth},
		{"link", "set", d.veth, "up"},
		{"-n", d.Netns, "addr", "add", d.Addr + "/30", "dev", peer},
		{"-n", d.Netns, "link", "set", peer, "up"},
		{"-n", d.Netns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

// freePort finds a free TCP port on addr (in this namespace: for an
// isolated host, the veth address is new, so any free port will do).
func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Kill kills the host's libvirtd at once (SIGKILL), as a crashed or
// unplugged host would vanish; its domains' QEMUs keep running until Stop.
func (d *Daemon) Kill() error {
	pid, err := d.pid("libvirtd")
	if err != nil {
		return err
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}

func (d *Daemon) pid(name string) (int, error) {
	b, err := os.ReadFile(filepath.Join(d.Root, name+".pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// Stop kills the host's domains and daemons and removes its network
// namespace and veth; the caller removes Root.
func (d *Daemon) Stop() error {
	var errs []error
	if out, err := exec.Command("sh", script(), "stop", d.Root).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("stop test libvirt host %s: %v: %s", d.Name, err, out))
	}
	if d.Netns != "" {
		exec.Command("ip", "netns", "delete", d.Netns).Run()
		exec.Command("ip", "link", "delete", d.veth).Run()
	}
	return errors.Join(errs...)
}

// Restart starts the host's libvirtd again after Kill, with the same
// folders, address, UUID and virtlogd: it takes back the domains whose
// QEMUs kept running, as a host's daemon does after a crash.
func (d *Daemon) Restart() error {
	args := []string{script(), "start", d.Root, d.Addr, strconv.Itoa(d.Port)}
	if d.Netns != "" {
		args = append(args, d.Netns)
	}
	if out, err := exec.Command("sh", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("restart test libvirt host %s: %v\n%s", d.Name, err, out)
	}
	return nil
}

// Freeze stops the host's libvirtd (SIGSTOP): its connections stay open
// and nothing answers, as when a host hangs or the network to it drops
// packets without a reset. Thaw undoes it.
func (d *Daemon) Freeze() error { return d.signal(syscall.SIGSTOP) }

// Thaw lets a frozen libvirtd run again (SIGCONT).
func (d *Daemon) Thaw() error { return d.signal(syscall.SIGCONT) }

func (d *Daemon) signal(sig syscall.Signal) error {
	pid, err := d.pid("libvirtd")
	if err != nil {
		return err
	}
	return syscall.Kill(pid, sig)
}
