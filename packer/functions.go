package packer

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	"golang.org/x/crypto/bcrypt"
)

// packerFunctions adds to kiln's template functions the ones Packer
// templates use that kiln templates do not have (Packer's list is
// Terraform's, plus a few of its own).
func packerFunctions(fns map[string]function.Function, now time.Time) {
	extra := map[string]function.Function{
		"regex":           stdlib.RegexFunc,
		"regexall":        stdlib.RegexAllFunc,
		"element":         stdlib.ElementFunc,
		"index":           stdlib.IndexFunc,
		"range":           stdlib.RangeFunc,
		"sort":            stdlib.SortFunc,
		"reverse":         stdlib.ReverseListFunc,
		"slice":           stdlib.SliceFunc,
		"zipmap":          stdlib.ZipmapFunc,
		"setunion":        stdlib.SetUnionFunc,
		"setintersection": stdlib.SetIntersectionFunc,
		"setproduct":      stdlib.SetProductFunc,
		"setsubtract":     stdlib.SetSubtractFunc,
		"formatlist":      stdlib.FormatListFunc,
		"compact":         stdlib.CompactFunc,
		"chunklist":       stdlib.ChunklistFunc,
		"coalescelist":    stdlib.CoalesceListFunc,
		"abs":             stdlib.AbsoluteFunc,
		"ceil":            stdlib.CeilFunc,
		"floor":           stdlib.FloorFunc,
		"log":             stdlib.LogFunc,
		"pow":             stdlib.PowFunc,
		"signum":          stdlib.SignumFunc,
		"parseint":        stdlib.ParseIntFunc,
		"strlen":          stdlib.StrlenFunc,
		"csvdecode":       stdlib.CSVDecodeFunc,
		"timeadd":         stdlib.TimeAddFunc,
		"tolist":          stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)),
		"toset":           stdlib.MakeToFunc(cty.Set(cty.DynamicPseudoType)),
		"tomap":           stdlib.MakeToFunc(cty.Map(cty.DynamicPseudoType)),
		"strcontains":     stringPred(strings.Contains),
		"startswith":      stringPred(strings.HasPrefix),
		"endswith":        stringPred(strings.HasSuffix),
		"urlencode":       stringFunc(url.QueryEscape),
		"sha1":            stringFunc(func(s string) string { h := sha1.Sum([]byte(s)); return hex.EncodeToString(h[:]) }),
		"textencodebase64": function.New(&function.Spec{
			Params: []function.Parameter{{Name: "s", Type: cty.String}, {Name: "encoding", Type: cty.String}},
			Type:   function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				if enc := strings.ToUpper(args[1].AsString()); enc != "UTF-8" && enc != "UTF8" {
					return cty.NilVal, function.NewArgErrorf(1, "kiln encodes UTF-8 only, not %s", args[1].AsString())
				}
				return cty.StringVal(base64.StdEncoding.EncodeToString([]byte(args[0].AsString()))), nil
			},
		}),
		"uuidv4": function.New(&function.Spec{
			Type: function.StaticReturnType(cty.String),
			Impl: func([]cty.Value, cty.Type) (cty.Value, error) {
				var b [16]byte
				rand.Read(b[:])
				b[6] = b[6]&0x0f | 0x40
				b[8] = b[8]&0x3f | 0x80
				return cty.StringVal(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])), nil
			},
		}),
		"bcrypt": function.New(&function.Spec{
			Params:   []function.Parameter{{Name: "password", Type: cty.String}},
			VarParam: &function.Parameter{Name: "cost", Type: cty.Number},
			Type:     function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				cost := 10
				if len(args) > 1 {
					c, _ := args[1].AsBigFloat().Int64()
					cost = int(c)
				}
				h, err := bcrypt.GenerateFromPassword([]byte(args[0].AsString()), cost)
				if err != nil {
					return cty.NilVal, err
				}
				return cty.StringVal(string(h)), nil
			},
		}),
		// Packer's legacy_isotime takes a Go layout.
		"legacy_isotime": function.New(&function.Spec{
			Params: []function.Parameter{{Name: "format", Type: cty.String}},
			Type:   function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				return cty.StringVal(now.UTC().Format(args[0].AsString())), nil
			},
		}),
	}
	for name, f := range extra {
		if _, ok := fns[name]; !ok {
			fns[name] = f
		}
	}
}

func stringFunc(f func(string) string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "s", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(f(args[0].AsString())), nil
		},
	})
}

func stringPred(f func(string, string) bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "s", Type: cty.String}, {Name: "sub", Type: cty.String}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.BoolVal(f(args[0].AsString(), args[1].AsString())), nil
		},
	})
}
