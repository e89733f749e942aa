package template

import (
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty/function"
)

// Hooks for other template dialects (package packer) that read HCL the way
// kiln templates do, so functions and diagnostics behave the same in both.

// FuncSet is the functions of one load and what they read.
type FuncSet struct {
	Funcs map[string]function.Function
	st    *evalState
}

// NewFuncSet returns the functions kiln templates may call, with relative
// paths resolved against dir, env (os.Environ() style) read by env(), and
// timestamp() fixed at now.
func NewFuncSet(dir string, env []string, now time.Time) *FuncSet {
	m := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	st := &evalState{dir: dir, env: m, now: now.UTC(), reads: map[string]input{}, envReads: map[string]string{}}
	return &FuncSet{Funcs: st.functions(), st: st}
}

// Reads are the files read by file() and templatefile(), by absolute path,
// and the environment variables env() read, for a digest of the inputs.
func (f *FuncSet) Reads() (files map[string][]byte, env map[string]string) {
	files = make(map[string][]byte, len(f.st.reads))
	for p, in := range f.st.reads {
		files[p] = in.data
	}
	return files, f.st.envReads
}

// FromHCL turns HCL diagnostics into Diagnostics (errors only, sorted by
// position, duplicates dropped), as Load reports them.
func FromHCL(diags hcl.Diagnostics) Diagnostics { return fromHCL(diags) }

// DidYouMean suggests the choice closest to s, as " Did you mean "x"?", or "".
func DidYouMean(s string, choices []string) string { return didYouMean(s, choices) }

// ReadSource reads a template or var file of another dialect (Packer's)
// under the same limits as kiln's own: a regular file of at most 1 MiB.
func ReadSource(path string) ([]byte, error) { return readSource(path, maxTemplateSize) }

// CheckDepth reports where src nests deeper than kiln's evaluator may
// safely go, as kiln's own templates are checked before parsing.
func CheckDepth(src []byte, name string) hcl.Diagnostics { return checkDepth(src, name) }
