package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
)

func cmdImages(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"say what to do: kiln images ls | show REF"}
	}
	switch args[0] {
	case "ls", "list":
		return cmdImagesList(args[1:])
	case "show", "inspect":
		return cmdImagesShow(args[1:])
	}
	return usageError{fmt.Sprintf("unknown images command %q: use ls or show", args[0])}
}

func openStore() (*images.Store, error) {
	return images.Open(images.DefaultPaths().Images())
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
			parent = m.Parent.Ref
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
	fmt.Printf("base:       %s %s\n", m.Base.Source, m.Base.Checksum)
	if m.Parent != nil {
		fmt.Printf("parent:     %s (%s)\n", m.Parent.Ref, shortDigest(m.Parent.Digest))
	}
	if m.TemplateDigest != "" {
		fmt.Printf("template:   %s\n", m.TemplateDigest)
	}
	for k, v := range m.Variables {
		fmt.Printf("var:        %s = %s\n", k, v)
	}
	for _, p := range m.Provisioners {
		fmt.Printf("provision:  %s\n", p)
	}
	fmt.Printf("built:      %s – %s (%s, %s) by kiln %s\n", m.BuildStart.Local().Format(time.DateTime),
		m.BuildEnd.Local().Format(time.TimeOnly), m.BuildEnd.Sub(m.BuildStart).Round(time.Second), orDash(m.Accelerator), m.KilnVersion)
	for _, l := range []string{"build.log", "serial.log"} {
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
