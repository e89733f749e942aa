package packer

import (
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// value evaluates attr and converts it to ty; ok is false when it is null,
// unknown (it depends on a broken variable, already reported) or wrong.
func (l *loader) value(attr *hcl.Attribute, ctx *hcl.EvalContext, ty cty.Type) (cty.Value, bool) {
	if attr == nil {
		return cty.NilVal, false
	}
	v, diags := attr.Expr.Value(ctx)
	l.diags = append(l.diags, diags...)
	if diags.HasErrors() || v.IsNull() || !v.IsWhollyKnown() {
		return cty.NilVal, false
	}
	// The shared functions mark what file() read (so kiln templates can
	// keep it out of diagnostics); the build spec takes plain values.
	v, _ = v.UnmarkDeep()
	cv, err := convert.Convert(v, ty)
	if err != nil {
		l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Incorrect attribute value type",
			"Inappropriate value for attribute %q: %s.", attr.Name, err))
		return cty.NilVal, false
	}
	if cv.IsNull() {
		return cty.NilVal, false
	}
	return cv, true
}

func (l *loader) str(attr *hcl.Attribute, ctx *hcl.EvalContext) (string, bool) {
	v, ok := l.value(attr, ctx, cty.String)
	if !ok {
		return "", false
	}
	return v.AsString(), true
}

func (l *loader) boolean(attr *hcl.Attribute, ctx *hcl.EvalContext) bool {
	v, ok := l.value(attr, ctx, cty.Bool)
	return ok && v.True()
}

func (l *loader) integer(attr *hcl.Attribute, ctx *hcl.EvalContext) (int, bool) {
	v, ok := l.value(attr, ctx, cty.Number)
	if !ok {
		return 0, false
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if !bf.IsInt() || acc != 0 || i < 0 || i > 1<<31 {
		l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid "+attr.Name,
			"%s must be a whole number, not %s.", attr.Name, bf.Text('g', -1)))
		return 0, false
	}
	return int(i), true
}

func (l *loader) strList(attr *hcl.Attribute, ctx *hcl.EvalContext) ([]string, bool) {
	v, ok := l.value(attr, ctx, cty.List(cty.String))
	if !ok {
		return nil, false
	}
	out := []string{}
	for _, e := range v.AsValueSlice() {
		out = append(out, e.AsString())
	}
	return out, true
}

func (l *loader) intList(attr *hcl.Attribute, ctx *hcl.EvalContext) ([]int, bool) {
	v, ok := l.value(attr, ctx, cty.List(cty.Number))
	if !ok {
		return nil, false
	}
	var out []int
	for _, e := range v.AsValueSlice() {
		i, _ := e.AsBigFloat().Int64()
		out = append(out, int(i))
	}
	return out, true
}

func (l *loader) strMap(attr *hcl.Attribute, ctx *hcl.EvalContext) (map[string]string, bool) {
	v, ok := l.value(attr, ctx, cty.Map(cty.String))
	if !ok {
		return nil, false
	}
	out := map[string]string{}
	for k, e := range v.AsValueMap() {
		out[k] = e.AsString()
	}
	return out, true
}

// duration reads Packer's durations: Go's form ("5m", "1h30m"), as Packer
// parses them.
func (l *loader) duration(attr *hcl.Attribute, ctx *hcl.EvalContext) time.Duration {
	s, ok := l.str(attr, ctx)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid duration",
			`%s must be a duration such as "90s", "10m" or "1h30m", not %q.`, attr.Name, s))
		return 0
	}
	return d
}

// fieldSet is the attributes of a block body with the handled ones taken
// out as they are read, so what is left can be refused by name.
type fieldSet map[string]*hcl.Attribute

func (l *loader) attributes(body hcl.Body) fieldSet {
	attrs, diags := body.JustAttributes()
	for _, d := range diags {
		if d.Summary == "Unexpected \"dynamic\" block" || strings.Contains(d.Summary, "block") {
			d.Detail += " kiln reads this block's fields as attributes (name = value); nested blocks are not run here."
		}
	}
	l.diags = append(l.diags, diags...)
	return fieldSet(attrs)
}

func (f fieldSet) take(name string) *hcl.Attribute {
	a := f[name]
	delete(f, name)
	return a
}
