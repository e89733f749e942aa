package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/supervisor"
)

// rolloutFlags are shared by rollout and rollback.
type rolloutFlags struct {
	surge                 string
	bake, drain, deadline time.Duration
	autoPromote, detach   bool
	force                 bool
	accel                 string
	cold                  bool
	health                healthFlags
}

func (r *rolloutFlags) add(fs interface {
	StringVar(*string, string, string, string)
	DurationVar(*time.Duration, string, time.Duration, string)
	BoolVar(*bool, string, bool, string)
}) {
	fs.StringVar(&r.surge, "surge", "100%", "share of the fleet replaced per batch")
	fs.DurationVar(&r.bake, "bake", 30*time.Second, "how long green must stay healthy after the switch before blue stops")
	fs.DurationVar(&r.drain, "drain", 10*time.Second, "longest wait for open connections to a retiring instance")
	fs.DurationVar(&r.deadline, "progress-deadline", 10*time.Minute, "the whole rollout must finish within this")
	fs.BoolVar(&r.autoPromote, "auto-promote", true, "switch as soon as green is healthy (false: wait for `kiln rollout promote`)")
	fs.BoolVar(&r.detach, "detach", false, "return at once instead of following the rollout")
	forceFlagVar(fs, &r.force, "roll out a revoked image anyway")
	fs.StringVar(&r.accel, "accel", "", accelUsage+"; for the instances this rollout starts")
	fs.BoolVar(&r.cold, "cold", false, "boot the instances this rollout starts (and the fleet's later ones) instead of resuming a saved guest")
}

func (r *rolloutFlags) request(ctx context.Context, name, to string, rollback bool) (supervisor.RolloutRequest, error) {
	surge, err := strconv.Atoi(strings.TrimSuffix(r.surge, "%"))
	if err != nil || surge < 1 || surge > 100 {
		return supervisor.RolloutRequest{}, usageError{fmt.Sprintf("--surge %q: use a percentage from 1%% to 100%%", r.surge)}
	}
	spec, err := supervisor.ReadSpec(fleetDirs(name))
	if err != nil {
		return supervisor.RolloutRequest{}, err
	}
	check, err := r.health.check(spec.Ports)
	if err != nil {
		return supervisor.RolloutRequest{}, err
	}
	req := supervisor.RolloutRequest{To: to, Surge: surge, Bake: r.bake, Drain: r.drain,
		ProgressDeadline: r.deadline, AutoPromote: r.autoPromote, Check: check, Rollback: rollback, Force: r.force, Cold: r.cold}
	ar, err := parseAccel(r.accel)
	if err != nil {
		return req, err
	}
	if ar.from != "" { // asked for: otherwise the fleet keeps what it runs under
		c, err := ar.choose(ctx)
		if err != nil {
			return req, err
		}
		req.Accel, req.CPU = c.Accel, c.CPU
	}
	return req, nil
}

func cmdRollout(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "status":
			return cmdRolloutStatus(args[1:])
		case "history":
			return cmdRolloutHistory(args[1:])
		case "promote":
			if len(args) != 2 {
				return usageError{"rollout promote NAME"}
			}
			return supervisor.NewClient(fleetDirs(args[1])).Promote()
		}
	}
	fs := newFlags("rollout", "rollout NAME --to REF [flags] | rollout status NAME | rollout history NAME | rollout promote NAME")
	to := fs.String("to", "", "image ref to roll out, e.g. hello:1.1.0")
	var rf rolloutFlags
	rf.add(fs)
	rf.health.add(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *to == "" {
		return usageError{"give a fleet name and --to, e.g. kiln rollout web --to hello:1.1.0"}
	}
	target, err := localRef(ctx, *to)
	if err != nil {
		return err
	}
	*to = target
	req, err := rf.request(ctx, fs.Arg(0), *to, false)
	if err != nil {
		return err
	}
	return runRollout(ctx, fs.Arg(0), req, rf.detach)
}

func cmdRollback(ctx context.Context, args []string) error {
	fs := newFlags("rollback", "rollback NAME [--to REF] [flags]")
	to := fs.String("to", "", "version to go back to (default: the previous stable version)")
	var rf rolloutFlags
	rf.add(fs)
	rf.health.add(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give a fleet name"}
	}
	target, err := localRef(ctx, *to)
	if err != nil {
		return err
	}
	*to = target
	req, err := rf.request(ctx, fs.Arg(0), *to, true)
	if err != nil {
		return err
	}
	return runRollout(ctx, fs.Arg(0), req, rf.detach)
}

// runRollout starts a rollout and, unless detached, prints each transition
// until it ends; a rollout that did not succeed is an error.
func runRollout(ctx context.Context, name string, req supervisor.RolloutRequest, detach bool) error {
	c := supervisor.NewClient(fleetDirs(name))
	id, err := c.Rollout(req)
	if err != nil {
		return err
	}
	say("rollout %d of fleet %s started", id, name)
	if detach {
		say("follow it with: kiln rollout status %s", name)
		return nil
	}
	printed := 0
	for {
		st, err := c.Status()
		if err != nil {
			return fmt.Errorf("lost the supervisor while following rollout %d: %w", id, err)
		}
		if r := st.Rollout; r != nil && r.ID == id {
			for ; printed < len(r.History); printed++ {
				t := r.History[printed]
				note := ""
				if t.Note != "" {
					note = ": " + t.Note
				}
				say("%s → %s%s", t.From, t.To, note)
			}
			if done := finishedRollout(st, id); done != nil {
				if done.Result == supervisor.ResultSucceededWithCuts {
					say("rollout %d reached %s but %s", id, done.To, done.Reason)
					return nil
				}
				if done.Result != string(fleet.PhaseSucceeded) {
					return fmt.Errorf("rollout %d to %s %s: %s", id, done.To, done.Result, done.Reason)
				}
				say("rollout %d succeeded: fleet %s runs %s", id, name, done.To)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			say("stopped following; the rollout goes on (kiln rollout status %s)", name)
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func finishedRollout(st supervisor.State, id int) *supervisor.RolloutSummary {
	for i := range st.History {
		if st.History[i].ID == id {
			return &st.History[i]
		}
	}
	return nil
}

// readRolloutState is the shared start of `rollout status` and `rollout
// history`: flags, the fleet's name and its state.
func readRolloutState(cmd string, args []string) (name string, st supervisor.State, asJSON bool, err error) {
	fs := newFlags("rollout "+cmd, "rollout "+cmd+" NAME [--json]")
	j := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return "", st, false, err
	}
	if fs.NArg() != 1 {
		return "", st, false, usageError{"give a fleet name"}
	}
	st, _, err = fleetStatus(fs.Arg(0))
	return fs.Arg(0), st, *j, err
}

func cmdRolloutStatus(args []string) error {
	name, st, asJSON, err := readRolloutState("status", args)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(st.Rollout)
	}
	r := st.Rollout
	if r == nil {
		fmt.Printf("fleet %s has had no rollout; it runs %s\n", name, st.Stable)
		return nil
	}
	fmt.Printf("rollout %d: %s → %s, phase %s\n", r.ID, r.PreviousStable, r.Target, r.Phase)
	if r.Reason != "" {
		fmt.Printf("reason: %s\n", r.Reason)
	}
	fmt.Printf("blue: %s\ngreen: %s\n", strings.Join(r.Blue, " "), strings.Join(r.Green, " "))
	if r.Restored {
		fmt.Printf("restore: %s\n", strings.Join(r.Restore, " "))
	}
	for _, t := range r.History {
		fmt.Printf("  %s  %s → %s %s\n", t.At.Local().Format(time.TimeOnly), t.From, t.To, t.Note)
	}
	return nil
}

func cmdRolloutHistory(args []string) error {
	_, st, asJSON, err := readRolloutState("history", args)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(st.History)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tFROM\tTO\tRESULT\tSTARTED\tTOOK\tREASON")
	for _, h := range st.History {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", h.ID, h.From, h.To, h.Result,
			h.Started.Local().Format(time.DateTime), h.Ended.Sub(h.Started).Round(time.Second), h.Reason)
	}
	return w.Flush()
}
