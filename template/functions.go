package template

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	"gopkg.in/yaml.v3"

	"github.com/kiln-dev/kiln/internal/fileutil"
)

// evalState is what the template's functions see and record. One is made
// per Load, so every file() and env() a template performs lands in its
// digest, and timestamp() gives the same answer however often it is called.
type evalState struct {
	dir      string            // the template's folder; relative paths resolve here
	env      map[string]string // the environment env() reads
	now      time.Time         // what timestamp() returns
	reads    map[string]input  // files read by file() and templatefile(), by absolute path
	envReads map[string]string // variables read by env(), for the digest
}

// input is a file a template read, kept as read so that the digest covers
// exactly the bytes that went into the Spec.
type input struct {
	data []byte
	mode fs.FileMode
}

// resolve makes p absolute against the template's folder.
func (st *evalState) resolve(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(st.dir, p)
}

// readText reads a text file for file() and templatefile(). Only regular
// files are read: a device or FIFO could block or never end.
func (st *evalState) readText(p string) (string, error) {
	abs := st.resolve(p)
	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no file exists at %q (resolved to %s; relative paths are resolved against the template's folder)", p, abs)
	}
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%q is not a regular file", p)
	}
	if fi.Size() > maxReadSize {
		return "", fmt.Errorf("%q is %d bytes, more than the %d a template reads; upload it with a file provisioner instead", p, fi.Size(), maxReadSize)
	}
	data, err := fileutil.ReadRegular(abs, maxReadSize)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(data) {
		return "", fmt.Errorf("%q is not valid UTF-8 text", p)
	}
	st.reads[abs] = input{data: data, mode: fi.Mode()}
	return string(data), nil
}

// functions returns the functions templates may call: Terraform's familiar
// names, from go-cty's stdlib where it has them, and local ones for files,
// the environment, time and hashing.
func (st *evalState) functions() map[string]function.Function {
	fns := map[string]function.Function{
		// files and paths
		"file":         st.fileFunc(),
		"abspath":      st.abspathFunc(),
		"basename":     pathFunc(filepath.Base),
		"dirname":      pathFunc(filepath.Dir),
		"env":          st.envFunc(),
		"timestamp":    st.timestampFunc(),
		"formatdate":   stdlib.FormatDateFunc,
		"sha256":       hashFunc(sha256.New),
		"sha512":       hashFunc(sha512.New),
		"md5":          hashFunc(md5.New),
		"base64encode": base64EncodeFunc,
		"base64decode": base64DecodeFunc,
		"jsonencode":   stdlib.JSONEncodeFunc,
		"jsondecode":   stdlib.JSONDecodeFunc,
		"yamlencode":   yamlEncodeFunc,
		// strings
		"upper":         stdlib.UpperFunc,
		"lower":         stdlib.LowerFunc,
		"title":         stdlib.TitleFunc,
		"trimspace":     stdlib.TrimSpaceFunc,
		"trim":          stdlib.TrimFunc,
		"trimprefix":    stdlib.TrimPrefixFunc,
		"trimsuffix":    stdlib.TrimSuffixFunc,
		"chomp":         stdlib.ChompFunc,
		"indent":        stdlib.IndentFunc,
		"replace":       stdlib.ReplaceFunc,
		"regex_replace": stdlib.RegexReplaceFunc,
		"substr":        stdlib.SubstrFunc,
		"join":          stdlib.JoinFunc,
		"split":         stdlib.SplitFunc,
		"format":        stdlib.FormatFunc,
		// collections
		"concat":   stdlib.ConcatFunc,
		"merge":    stdlib.MergeFunc,
		"lookup":   stdlib.LookupFunc,
		"length":   lengthFunc,
		"contains": stdlib.ContainsFunc,
		"keys":     stdlib.KeysFunc,
		"values":   stdlib.ValuesFunc,
		"flatten":  stdlib.FlattenFunc,
		"distinct": stdlib.DistinctFunc,
		"coalesce": coalesceFunc,
		"min":      stdlib.MinFunc,
		"max":      stdlib.MaxFunc,
		// conversions and error handling
		"tostring": stdlib.MakeToFunc(cty.String),
		"tonumber": stdlib.MakeToFunc(cty.Number),
		"tobool":   stdlib.MakeToFunc(cty.Bool),
		"try":      tryfunc.TryFunc,
		"can":      tryfunc.CanFunc,
	}
	for name, f := range fns {
		if name != "try" && name != "can" { // these evaluate expressions, not values
			fns[name] = guardNumbers(f)
		}
	}
	// A template rendered by templatefile sees the same functions, except
	// templatefile itself: recursion could loop forever.
	inner := make(map[string]function.Function, len(fns))
	for k, v := range fns {
		inner[k] = v
	}
	inner["templatefile"] = function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}, {Name: "vars", Type: cty.DynamicPseudoType}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func([]cty.Value, cty.Type) (cty.Value, error) {
			return cty.NilVal, errors.New("templatefile cannot be called from a template rendered by templatefile")
		},
	})
	fns["templatefile"] = st.templatefileFunc(inner)
	return fns
}

func (st *evalState) fileFunc() function.Function {
	return function.New(&function.Spec{
		Description: "Reads a text file, relative to the template's folder.",
		Params:      []function.Parameter{{Name: "path", Type: cty.String}},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			s, err := st.readText(args[0].AsString())
			if err != nil {
				return cty.NilVal, function.NewArgError(0, err)
			}
			return cty.StringVal(s).Mark(fileMark{args[0].AsString()}), nil
		},
	})
}

func (st *evalState) templatefileFunc(inner map[string]function.Function) function.Function {
	return function.New(&function.Spec{
		Description: "Renders a file as an HCL string template with the given variables.",
		Params: []function.Parameter{
			{Name: "path", Type: cty.String},
			{Name: "vars", Type: cty.DynamicPseudoType, AllowNull: true},
		},
		Type: function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			text, err := st.readText(p)
			if err != nil {
				return cty.NilVal, function.NewArgError(0, err)
			}
			vars := map[string]cty.Value{}
			if v := args[1]; !v.IsNull() {
				ty := v.Type()
				if !ty.IsObjectType() && !ty.IsMapType() {
					return cty.NilVal, function.NewArgErrorf(1, "vars must be a map or an object, not %s", ty.FriendlyName())
				}
				if !v.IsKnown() {
					return cty.UnknownVal(cty.String), nil
				}
				for it := v.ElementIterator(); it.Next(); {
					k, ev := it.Element()
					name := k.AsString()
					if !hclsyntax.ValidIdentifier(name) {
						return cty.NilVal, function.NewArgErrorf(1, "%q cannot be a template variable: names are letters, digits, _ and -, starting with a letter", name)
					}
					vars[name] = ev
				}
			}
			if toks, _ := hclsyntax.LexTemplate([]byte(text), p, hcl.InitialPos); checkTokens(toks) != nil {
				return cty.NilVal, function.NewArgErrorf(0, "%q nests too deeply (more than %d levels, or %d operators in one expression)", p, maxNesting, maxOperators)
			}
			expr, diags := hclsyntax.ParseTemplate([]byte(text), p, hcl.InitialPos)
			if !diags.HasErrors() {
				diags = checkLiterals(expr)
			}
			if diags.HasErrors() {
				return cty.NilVal, function.NewArgError(0, diagsError(diags))
			}
			val, diags := expr.Value(&hcl.EvalContext{Variables: vars, Functions: inner})
			if diags.HasErrors() {
				return cty.NilVal, diagsError(diags)
			}
			val, marks := val.UnmarkDeep()
			if !val.IsWhollyKnown() {
				return cty.UnknownVal(cty.String), nil
			}
			if val.IsNull() {
				return cty.NilVal, fmt.Errorf("template %q rendered null", p)
			}
			s, err := convertTo(val, cty.String)
			if err != nil {
				return cty.NilVal, fmt.Errorf("template %q must render a string: %v", p, err)
			}
			return s.WithMarks(marks).Mark(fileMark{p}), nil
		},
	})
}

// diagsError flattens diagnostics from a templatefile template into one
// error, as a function can only fail with an error; positions are kept.
func diagsError(diags hcl.Diagnostics) error {
	var msgs []string
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if d.Subject != nil {
			msgs = append(msgs, fmt.Sprintf("%s:%d:%d: %s: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary, d.Detail))
		} else {
			msgs = append(msgs, d.Summary+": "+d.Detail)
		}
	}
	// HCL ends the sentence it wraps this in with its own period.
	return errors.New(strings.TrimSuffix(strings.Join(msgs, "; "), "."))
}

func (st *evalState) envFunc() function.Function {
	return function.New(&function.Spec{
		Description: "Returns an environment variable, or \"\" when it is unset.",
		Params:      []function.Parameter{{Name: "name", Type: cty.String}},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			name := args[0].AsString()
			v := st.env[name]
			st.envReads[name] = v
			return cty.StringVal(v), nil
		},
	})
}

func (st *evalState) timestampFunc() function.Function {
	return function.New(&function.Spec{
		Description: "Returns the time the template was loaded, in RFC 3339 form, UTC.",
		Type:        function.StaticReturnType(cty.String),
		Impl: func([]cty.Value, cty.Type) (cty.Value, error) {
			return cty.StringVal(st.now.UTC().Format(time.RFC3339)), nil
		},
	})
}

func (st *evalState) abspathFunc() function.Function {
	return function.New(&function.Spec{
		Description: "Makes a path absolute, relative to the template's folder.",
		Params:      []function.Parameter{{Name: "path", Type: cty.String}},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(st.resolve(args[0].AsString())), nil
		},
	})
}

func pathFunc(f func(string) string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(f(args[0].AsString())), nil
		},
	})
}

func hashFunc(h func() hash.Hash) function.Function {
	return function.New(&function.Spec{
		Description: "Returns the lowercase hex digest of a string's UTF-8 bytes.",
		Params:      []function.Parameter{{Name: "str", Type: cty.String}},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			w := h()
			w.Write([]byte(args[0].AsString()))
			return cty.StringVal(hex.EncodeToString(w.Sum(nil))), nil
		},
	})
}

var base64EncodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		return cty.StringVal(base64.StdEncoding.EncodeToString([]byte(args[0].AsString()))), nil
	},
})

var base64DecodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		b, err := base64.StdEncoding.DecodeString(args[0].AsString())
		if err != nil {
			return cty.NilVal, function.NewArgErrorf(0, "invalid base64: %v", err)
		}
		if !utf8.Valid(b) {
			return cty.NilVal, function.NewArgErrorf(0, "the decoded bytes are not valid UTF-8 text")
		}
		return cty.StringVal(string(b)), nil
	},
})

// lengthFunc is Terraform's length: unlike stdlib.LengthFunc it also
// counts the characters of a string and the attributes of an object.
var lengthFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "value", Type: cty.DynamicPseudoType, AllowDynamicType: true}},
	Type: func(args []cty.Value) (cty.Type, error) {
		ty := args[0].Type()
		if ty == cty.String || ty == cty.DynamicPseudoType || ty.IsObjectType() || ty.IsTupleType() ||
			ty.IsListType() || ty.IsMapType() || ty.IsSetType() {
			return cty.Number, nil
		}
		return cty.NilType, function.NewArgErrorf(0, "value must be a string, list, map or object, not %s", ty.FriendlyName())
	},
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		v := args[0]
		switch ty := v.Type(); {
		case ty == cty.String:
			return stdlib.Strlen(v)
		case ty.IsObjectType():
			return cty.NumberIntVal(int64(len(ty.AttributeTypes()))), nil
		default:
			return v.Length(), nil
		}
	},
})

// coalesceFunc is Terraform's coalesce: the first argument that is neither
// null nor an empty string (stdlib.CoalesceFunc only skips nulls, which
// surprises anyone writing coalesce(var.x, "default")).
var coalesceFunc = function.New(&function.Spec{
	VarParam: &function.Parameter{Name: "vals", Type: cty.DynamicPseudoType, AllowUnknown: true, AllowDynamicType: true, AllowNull: true},
	Type: func(args []cty.Value) (cty.Type, error) {
		types := make([]cty.Type, len(args))
		for i, a := range args {
			types[i] = a.Type()
		}
		return stdlib.CoalesceFunc.ReturnType(types)
	},
	Impl: func(args []cty.Value, retType cty.Type) (cty.Value, error) {
		for _, a := range args {
			if !a.IsKnown() {
				return cty.UnknownVal(retType), nil
			}
			if a.IsNull() || (a.Type() == cty.String && a.AsString() == "") {
				continue
			}
			return convert.Convert(a, retType)
		}
		return cty.NilVal, errors.New("no non-null, non-empty argument")
	},
})

// yamlEncodeFunc renders a value as YAML with two-space indentation, which
// is what cloud-config examples use.
var yamlEncodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "value", Type: cty.DynamicPseudoType, AllowNull: true}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		if !args[0].IsWhollyKnown() {
			return cty.UnknownVal(cty.String), nil
		}
		v, err := ctyToGo(args[0])
		if err != nil {
			return cty.NilVal, function.NewArgError(0, err)
		}
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(v); err != nil {
			return cty.NilVal, err
		}
		if err := enc.Close(); err != nil {
			return cty.NilVal, err
		}
		return cty.StringVal(buf.String()), nil
	},
})

// ctyToGo converts a known value to plain Go values for yaml.Marshal.
// Whole numbers become int64 so they are written without a fraction.
func ctyToGo(v cty.Value) (any, error) {
	if v.IsNull() {
		return nil, nil
	}
	ty := v.Type()
	switch {
	case ty == cty.String:
		return v.AsString(), nil
	case ty == cty.Bool:
		return v.True(), nil
	case ty == cty.Number:
		bf := v.AsBigFloat()
		if i, acc := bf.Int64(); acc == big.Exact {
			return i, nil
		}
		f, _ := bf.Float64()
		return f, nil
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType():
		out := []any{}
		for it := v.ElementIterator(); it.Next(); {
			_, ev := it.Element()
			g, err := ctyToGo(ev)
			if err != nil {
				return nil, err
			}
			out = append(out, g)
		}
		return out, nil
	case ty.IsMapType() || ty.IsObjectType():
		out := map[string]any{}
		for it := v.ElementIterator(); it.Next(); {
			k, ev := it.Element()
			g, err := ctyToGo(ev)
			if err != nil {
				return nil, err
			}
			out[k.AsString()] = g
		}
		return out, nil
	}
	return nil, fmt.Errorf("cannot encode a value of type %s", ty.FriendlyName())
}
