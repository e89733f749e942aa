package supervisor

import (
	"encoding/json"
	"errors"
	"os"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/internal/proc"
	"github.com/kiln-dev/kiln/qemu"
)

// State is what the supervisor remembers across restarts, saved after
// every change (atomically, so a crash leaves the old file or the new one).
type State struct {
	Stable     string              `json:"stable"`             // the version serving when no rollout runs
	Previous   []string            `json:"previous,omitempty"` // earlier stable versions, newest last, for rollback
	NextID     int                 `json:"next_id"`
	Instances  []InstanceRecord    `json:"instances"`
	Rollout    *fleet.RolloutState `json:"rollout,omitempty"` // the current or last rollout
	History    []RolloutSummary    `json:"history,omitempty"`
	Error      string              `json:"error,omitempty"` // why the supervisor stopped, if it did
	Supervisor int                 `json:"supervisor_pid"`
	// SupervisorStart is the supervisor's start time (proc.Process): a
	// pid alone may have been given to another process since.
	SupervisorStart string    `json:"supervisor_start,omitempty"`
	Ready           bool      `json:"ready"` // the first instances are up and healthy
	UpdatedAt       time.Time `json:"updated_at"`
	StartedAt       time.Time `json:"started_at"`
	ShuttingDown    bool      `json:"shutting_down,omitempty"`
	// Restarts counts the times a supervisor took over from one that had
	// died; LastRestart says when, why, and what it found.
	Restarts    int          `json:"restarts,omitempty"`
	LastRestart *RestartInfo `json:"last_restart,omitempty"`
}

// SupervisorProcess is the supervisor that last wrote the state.
func (s State) SupervisorProcess() proc.Process {
	return proc.Process{Pid: s.Supervisor, Start: s.SupervisorStart}
}

// ResultSucceededWithCuts is a rollout that reached its target but cut
// connections or requests that were still open at a drain deadline.
const ResultSucceededWithCuts = "succeeded-with-cuts"

// RestartInfo is one supervisor restart.
type RestartInfo struct {
	At        time.Time `json:"at"`
	Reason    string    `json:"reason"`
	Previous  int       `json:"previous_pid"`
	Adopted   []string  `json:"adopted"`            // instances taken over, running on
	Replaced  []string  `json:"replaced,omitempty"` // recorded instances that were gone or failing, with why
	Rollout   string    `json:"rollout,omitempty"`  // how an interrupted rollout was settled
	Completed time.Time `json:"completed,omitzero"` // when the front served the adopted instances again
}

// InstanceRecord is one instance as the CLI sees it.
type InstanceRecord struct {
	ID      string `json:"id"`
	Version string `json:"version"`
	Pid     int    `json:"pid"`
	// PidStart is the QEMU process's start time (clock ticks since boot):
	// a restarted supervisor adopts the process only if both still match.
	PidStart string      `json:"pid_start,omitempty"`
	Accel    qemu.Accel  `json:"accel,omitempty"`
	CPU      string      `json:"cpu_model,omitempty"`
	Dir      string      `json:"dir"`
	SSHPort  int         `json:"ssh_port"`
	Ports    map[int]int `json:"ports"` // guest port -> host port
	Started  time.Time   `json:"started"`
	Health   string      `json:"health"`
	Detail   string      `json:"detail,omitempty"`
	Serving  bool        `json:"serving"` // in the load balancer's set
	// Host is the libvirt host the instance runs on, and Domain its domain
	// there; both empty for a QEMU process on this machine.
	Host   string `json:"host,omitempty"`
	Domain string `json:"domain,omitempty"`
	// Address is where the instance's ports are forwarded on its host;
	// empty = 127.0.0.1 on this machine.
	Address string `json:"address,omitempty"`
}

// RolloutSummary is one finished rollout, for `kiln rollout history`.
type RolloutSummary struct {
	ID      int       `json:"id"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	Result  string    `json:"result"` // succeeded, succeeded-with-cuts, aborted, rolled-back, failed
	Reason  string    `json:"reason,omitempty"`
	Cut     int       `json:"cut,omitempty"` // connections or requests cut at drain deadlines
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`
}

// ReadState loads the saved state; a missing file is an empty state.
func ReadState(d Dirs) (State, error) {
	var s State
	b, err := os.ReadFile(d.State())
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}
