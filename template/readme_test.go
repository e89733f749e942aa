package template

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeExamples loads the HCL blocks the README shows, beside the
// hello example's files, so the documented syntax keeps working.
func TestReadmeExamples(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := hclBlocks(string(readme))
	if len(blocks) < 2 {
		t.Fatalf("the README has %d hcl blocks; want the template and the fleet file", len(blocks))
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../examples/hello")); err != nil {
		t.Fatal(err)
	}
	for i, block := range blocks {
		path := filepath.Join(dir, "readme.kiln.hcl")
		if err := os.WriteFile(path, []byte(block), 0o644); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(block, "\nfleet ") {
			_, err = LoadFleet(path, Options{Env: noEnv})
		} else {
			_, err = Load(path, Options{Env: noEnv})
		}
		if err != nil {
			t.Errorf("README hcl block %d:\n%s\ndoes not load: %v", i+1, block, err)
		}
	}
}

// hclBlocks returns the bodies of the ```hcl fences in a Markdown text.
func hclBlocks(md string) []string {
	var out []string
	for _, part := range strings.Split(md, "```hcl\n")[1:] {
		body, _, ok := strings.Cut(part, "```")
		if ok {
			out = append(out, body)
		}
	}
	return out
}
