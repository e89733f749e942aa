package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/termsafe"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/ociimage"
)

func cmdImages(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"say what to do: kiln images ls | show | tag | tree | revoke | verify | rm | gc | export | import | push | pull"}
	}
	switch args[0] {
	case "ls", "list":
		return cmdImagesList(args[1:])
	case "show", "inspect":
		return cmdImagesShow(args[1:])
	case "export":
		return cmdImagesExport(ctx, args[1:])
	case "tag":
		return cmdImagesTag(args[1:])
	case "tree":
		return cmdImagesTree(args[1:])
	case "revoke":
		return cmdImagesRevoke(args[1:], true)
	case "unrevoke":
		return cmdImagesRevoke(args[1:], false)
	case "verify":
		return cmdImagesVerify(ctx, args[1:])
	case "rm", "remove":
		return cmdImagesRemove(ctx, args[1:])
	case "gc":
		return cmdImagesGC(ctx, args[1:])
	case "import":
		return cmdImagesImport(ctx, args[1:])
	case "push":
		return cmdImagesPush(ctx, args[1:])
	case "pull":
		return cmdImagesPull(ctx, args[1:])
	}
	return usageError{fmt.Sprintf("unknown images command %q: use ls, show, tag, tree, revoke, unrevoke, verify, rm, gc, export, import, push or pull", args[0])}
}

func openStore() (*images.Store, error) {
	return images.Open(layout.Default().StoreDir())
}

func cmdImagesList(args []string) error {
	fs := newFlags("images ls", "images ls [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	list, listErr := store.List()
	if *asJSON {
		if list == nil {
			list = []images.Manifest{}
		}
		if err := printJSON(list); err != nil {
			return err
		}
		return listErr
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "REF\tDIGEST\tSIZE\tVIRTUAL\tPARENT\tBUILT")
	for _, m := range list {
		parent := "-"
		if m.Parent != nil {
			parent = termsafe.Line(m.Parent.Ref)
		}
		fmt.Fprintf(w, "%s:%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Version, shortDigest(m.Digest),
			disk.FormatSize(m.FileSize), disk.FormatSize(m.VirtualSize), parent, m.BuildEnd.Local().Format(time.DateTime))
	}
	w.Flush()
	return listErr
}

func cmdImagesShow(args []string) error {
	fs := newFlags("images show", "images show REF [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give one image ref, e.g. hello:1.0.0"}
	}
	ref, err := images.ParseRef(fs.Arg(0))
	if err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	m, err := store.Resolve(ref)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(m)
	}
	fmt.Printf("ref:        %s:%s\n", m.Name, m.Version)
	fmt.Printf("digest:     %s\n", m.Digest)
	fmt.Printf("file:       %s\n", store.BlobPath(m.Digest))
	fmt.Printf("format:     %s (%s), %s on disk, %s virtual\n", m.Format, orDash(m.Compression), disk.FormatSize(m.FileSize), disk.FormatSize(m.VirtualSize))
	fmt.Printf("base:       %s %s\n", termsafe.Line(m.Base.Source), termsafe.Line(m.Base.Checksum))
	if m.Parent != nil {
		fmt.Printf("parent:     %s (%s)\n", m.Parent.Ref, shortDigest(m.Parent.Digest))
	}
	if m.TemplateDigest != "" {
		fmt.Printf("template:   %s\n", m.TemplateDigest)
	}
	if from := m.Labels[ociimage.LabelPulledFrom]; from != "" {
		fmt.Printf("pulled:     %s\n", from)
	}
	for k, v := range m.Variables {
		fmt.Printf("var:        %s = %s\n", termsafe.Line(k), termsafe.Line(v))
	}
	for _, p := range m.Provisioners {
		fmt.Printf("provision:  %s\n", termsafe.Line(p))
	}
	fmt.Printf("built:      %s – %s (%s, %s) by kiln %s\n", m.BuildStart.Local().Format(time.DateTime),
		m.BuildEnd.Local().Format(time.TimeOnly), m.BuildEnd.Sub(m.BuildStart).Round(time.Second), termsafe.Line(orDash(m.Accelerator)), termsafe.Line(m.KilnVersion))
	if len(m.Phases) > 0 {
		var parts []string
		for _, p := range m.Phases {
			parts = append(parts, fmt.Sprintf("%s %.1fs", termsafe.Line(p.Name), p.Seconds))
		}
		fmt.Printf("phases:     %s\n", strings.Join(parts, ", "))
	}
	if m.GuestUsedBytes > 0 {
		fmt.Printf("guest used: %s on the root filesystem\n", disk.FormatSize(m.GuestUsedBytes))
	}
	for _, l := range []string{layout.BuildLogFile, layout.SerialFile} {
		if p := store.LogPath(m.Ref(), l); p != "" {
			if _, err := os.Stat(p); err == nil {
				fmt.Printf("log:        %s\n", p)
			}
		}
	}
	return nil
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdImagesExport(ctx context.Context, args []string) error {
	fs := newFlags("images export", "images export REF --format qcow2|raw|vmdk|vhd|vhdx [--compress zlib|zstd|none] -o FILE")
	format := fs.String("format", "qcow2", "qcow2, raw, vmdk (stream-optimised), vhd (fixed, whole MiB) or vhdx")
	compress := fs.String("compress", "", "qcow2 only: zlib (default, what older importers read), zstd or none")
	out := fs.StringP("output", "o", "", "file to write (a .sha256 goes beside it)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *out == "" {
		return usageError{"give an image ref and -o FILE, e.g. kiln images export hello:1.0.0 --format vmdk -o hello.vmdk"}
	}
	store, m, err := resolveStored(fs.Arg(0))
	if err != nil {
		return err
	}
	if err := needTools(qemuImg); err != nil {
		return err
	}
	start := time.Now()
	paths := layout.Default()
	bar, drawn := progressBar("exporting "+m.Ref().String()), false
	sum, err := store.Export(ctx, m, *out, disk.ExportOptions{
		Format: *format, Compression: *compress, Progress: func(p float64) { drawn = true; bar(p) },
		Protected: []string{paths.Data, paths.Cache, paths.Runtime},
	})
	if drawn {
		fmt.Fprintln(os.Stderr)
	}
	if err != nil {
		return err
	}
	info, _ := os.Stat(*out)
	say("exported %s as %s in %s", m.Ref(), *format, time.Since(start).Round(time.Second))
	fmt.Printf("%s\n%s\nsha256:%s\n", termsafe.Line(*out), disk.FormatSize(info.Size()), sum)
	return nil
}

// resolveStored opens the store and finds a ref in it.
func resolveStored(arg string) (*images.Store, images.Manifest, error) {
	ref, err := images.ParseRef(arg)
	if err != nil {
		return nil, images.Manifest{}, err
	}
	store, err := openStore()
	if err != nil {
		return nil, images.Manifest{}, err
	}
	m, err := store.Resolve(ref)
	return store, m, err
}

// progressBar draws a one-line bar on a terminal and quarter marks otherwise.
func progressBar(label string) func(float64) {
	tty := term.IsTerminal(int(os.Stderr.Fd()))
	last := -1
	return func(p float64) {
		pct := int(p)
		if tty {
			n := pct / 4
			fmt.Fprintf(os.Stderr, "\r%s [%s%s] %3d%%", label, strings.Repeat("=", n), strings.Repeat(" ", 25-n), pct)
			return
		}
		if pct/25 > last {
			last = pct / 25
			fmt.Fprintf(os.Stderr, "%s %d%%\n", label, last*25)
		}
	}
}
