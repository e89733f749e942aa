// Command kiln bakes versioned VM images and runs them under QEMU.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/termsafe"
	"github.com/kiln-dev/kiln/workdir"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// command is one subcommand: it parses its own flags from args.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"base":     {"make a base cloud image from Debian packages", cmdBase},
		"run":      {"boot an ephemeral VM from an image and run a command in it", cmdRun},
		"doctor":   {"report QEMU, the accelerator and the tools kiln uses", cmdDoctor},
		"version":  {"print kiln's version", cmdVersion},
		"build":    {"bake a versioned image from a template", cmdBuild},
		"validate": {"check a template and report every problem", cmdValidate},
		"images":   {"list and inspect stored images (ls, show)", cmdImages},
		"fleet":    {"run fleets of instances behind a load balancer (up, ls, status, ssh, exec, logs, down)", cmdFleet},
		"rollout":  {"roll a fleet to a new version, blue/green (status, history)", cmdRollout},
		"rollback": {"roll a fleet back to its previous stable version", cmdRollback},
		"cache":    {"list and remove saved booted guests used for warm starts (ls, prune)", cmdCache},
		"hosts":    {"libvirt hosts fleets can run on (add, ls, rm)", cmdHosts},
	}
}

// exitError carries an exit status without a message (e.g. a guest
// command's own status).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(realMain(ctx, os.Args[1:], os.Stderr))
}

func realMain(ctx context.Context, args []string, stderr io.Writer) int {
	forceFlagged = false // set again by the command that defines --force
	setupLogging(args)
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" {
		args[0] = "version"
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "kiln: unknown command %q; run `kiln help` for the list\n", args[0])
		return 2
	}
	if args[0] != "version" {
		reclaimStaleWork()
	}
	err := cmd.run(ctx, args[1:])
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "kiln %s: %s\n", commandName(args), termsafe.Text(ue.msg))
		return 2
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintln(stderr, "kiln: interrupted; cleaned up")
		return 130
	default:
		// Messages quote names, paths and text from outside kiln: escaped,
		// so they cannot drive the terminal.
		fmt.Fprintf(stderr, "kiln %s: %s\n", commandName(args), termsafe.Text(forceHint(err).Error()))
		return 1
	}
}

// commandName names the command in error messages: "images show", not just
// "images", for the commands that group subcommands.
func commandName(args []string) string {
	if (args[0] == "images" || args[0] == "fleet") && len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		return args[0] + " " + args[1]
	}
	return args[0]
}

// reclaimStaleWork removes what a kiln that was killed (kill -9, a crash,
// a power cut) left in the runtime folder: its QEMU processes and its
// build or run folder. Any command does it, so stale work never piles up.
func reclaimStaleWork() {
	stale, err := workdir.Reclaim(images.DefaultPaths().Runtime)
	for _, s := range stale {
		say("removed stale work of an interrupted kiln: %s", s)
	}
	if err != nil {
		say("could not remove all stale work: %v", err)
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "kiln bakes versioned VM images and runs them under QEMU.")
	fmt.Fprintln(w, "\nUsage: kiln COMMAND [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun `kiln COMMAND --help` for a command's flags. Set KILN_LOG=debug or pass --debug for detail.")
}

// setupLogging makes slog quiet by default; --debug or KILN_LOG=debug turns
// on detail.
func setupLogging(args []string) {
	level := slog.LevelWarn
	if strings.EqualFold(os.Getenv("KILN_LOG"), "debug") {
		level = slog.LevelDebug
	}
	for _, a := range args {
		if a == "--debug" {
			level = slog.LevelDebug
		}
		if a == "--" {
			break
		}
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
}

// newFlags makes a flag set for a subcommand with the shared flags.
func newFlags(name, usageLine string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.Bool("debug", false, "print debug detail")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: kiln %s\n\nFlags:\n%s", usageLine, fs.FlagUsages())
	}
	return fs
}

// parseFlags parses and turns pflag's errors into usage errors.
func parseFlags(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err.Error() + " (see --help)"}
	}
	return nil
}

func cmdVersion(ctx context.Context, args []string) error {
	fmt.Println("kiln", version)
	return nil
}

// say prints a progress line to stderr, so stdout stays for results and
// guest output.
func say(format string, args ...any) {
	fmt.Fprintln(os.Stderr, "==> "+termsafe.Text(fmt.Sprintf(format, args...)))
}
