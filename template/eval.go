package template

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// value evaluates an attribute of the image block and converts it to ty.
// ok is false when the attribute is absent or null (both mean "not set",
// so a conditional can leave a setting out), or when its value could not be
// had; the reason, if any, is already in l.diags. Values that depend on a
// broken variable are unknown, and are skipped silently, so one mistake is
// reported once.
func (l *loader) value(attr *hcl.Attribute, ty cty.Type) (cty.Value, bool) {
	v, ok := l.raw(attr)
	if !ok || v.IsNull() || !v.IsWhollyKnown() {
		return cty.NilVal, false
	}
	cv, err := convertTo(v, ty)
	if err != nil {
		summary := "Incorrect attribute value type"
		if errors.Is(err, errNumberRange) {
			summary = "Number out of range"
		}
		l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), summary,
			"Inappropriate value for attribute %q: %s.", attr.Name, err))
		return cty.NilVal, false
	}
	if !cv.IsWhollyKnown() || cv.IsNull() {
		return cty.NilVal, false
	}
	return cv, true
}

// isSet reports whether an attribute is present and not null. One that
// failed to evaluate counts as set: its problem is already reported.
func (l *loader) isSet(attr *hcl.Attribute) bool {
	if attr == nil {
		return false
	}
	v, ok := l.raw(attr)
	return !ok || !v.IsNull()
}

// raw evaluates an attribute once, however often it is asked for, so its
// problems are reported once and file() reads happen once. Attributes of
// variable blocks are evaluated before any variable has a value, so they
// may not refer to one; the others are checked by checkRefs.
func (l *loader) raw(attr *hcl.Attribute) (cty.Value, bool) {
	if attr == nil {
		return cty.NilVal, false
	}
	if r, done := l.evaluated[attr]; done {
		return r.v, r.ok
	}
	r := l.eval(attr)
	l.evaluated[attr] = r
	return r.v, r.ok
}

type evalResult struct {
	v  cty.Value
	ok bool
}

func (l *loader) eval(attr *hcl.Attribute) evalResult {
	ctx := l.ctx
	if l.ctx == nil { // still declaring variables
		ctx = l.constCtx
		if refs := attr.Expr.Variables(); len(refs) > 0 {
			for _, tr := range refs {
				l.diags = append(l.diags, diagAt(tr.SourceRange().Ptr(), "Variables not allowed",
					"The %s of a variable must not refer to variables: variables get their values after it is known.", attr.Name))
			}
			return evalResult{}
		}
	} else if !l.checkRefs(attr.Expr) {
		return evalResult{}
	}
	l.taintRefs(attr)
	v, diags := attr.Expr.Value(ctx)
	l.diags = append(l.diags, diags...)
	if diags.HasErrors() {
		return evalResult{}
	}
	return evalResult{v: l.unmark(attr, v), ok: true}
}

// checkRefs reports references to things that do not exist before the
// expression is evaluated, so the message can speak of template variables
// ("undefined variable") rather than of HCL objects and attributes.
func (l *loader) checkRefs(expr hcl.Expression) bool {
	ok := true
	for _, tr := range expr.Variables() {
		rng := tr.SourceRange().Ptr()
		root := tr.RootName()
		if root != "var" {
			hint := " Template variables are referred to as var.NAME."
			if _, declared := l.vars[root]; declared {
				hint = fmt.Sprintf(" Did you mean var.%s?", root)
			} else if editDistance(root, "var") < 2 {
				hint = ` Did you mean "var"?`
			}
			l.diags = append(l.diags, diagAt(rng, "Unknown variable", "There is no variable named %q.%s", root, hint))
			ok = false
			continue
		}
		if len(tr) < 2 {
			continue
		}
		var name string
		switch step := tr[1].(type) {
		case hcl.TraverseAttr:
			name = step.Name
		case hcl.TraverseIndex:
			if step.Key.Type() != cty.String || !step.Key.IsKnown() || step.Key.IsNull() {
				continue
			}
			name = step.Key.AsString()
		default:
			continue
		}
		if _, declared := l.vars[name]; !declared {
			l.diags = append(l.diags, diagAt(rng, "Undefined variable",
				"The template uses var.%s but declares no variable %q.%s", name, name, didYouMean(name, l.varOrder)))
			ok = false
		}
	}
	return ok
}

// convertTo converts v to ty, with an error that says where in a
// collection the mismatch is. Out-of-range numbers are refused on both
// sides, before converting one to a string could hang (see numbers.go).
func convertTo(v cty.Value, ty cty.Type) (cty.Value, error) {
	if err := checkNumbers(v); err != nil {
		return cty.NilVal, err
	}
	cv, err := convert.Convert(v, ty)
	if err != nil {
		if pe, ok := err.(cty.PathError); ok && len(pe.Path) > 0 {
			return cty.NilVal, fmt.Errorf("%s: %s", formatPath(pe.Path), pe.Error())
		}
		return cty.NilVal, err
	}
	if err := checkNumbers(cv); err != nil {
		return cty.NilVal, err
	}
	return cv, nil
}

// formatPath names a place in a value the way cty's own mismatch messages
// do: "element 1", "element \"key\"".
func formatPath(p cty.Path) string {
	parts := []string{}
	for _, step := range p {
		switch s := step.(type) {
		case cty.GetAttrStep:
			parts = append(parts, s.Name)
		case cty.IndexStep:
			switch {
			case s.Key.Type() == cty.String:
				parts = append(parts, fmt.Sprintf("%q", s.Key.AsString()))
			case s.Key.Type() == cty.Number:
				parts = append(parts, s.Key.AsBigFloat().Text('f', -1))
			}
		}
	}
	return "element " + strings.Join(parts, ".")
}

// valueString renders a primitive value the way a user would type it.
func valueString(v cty.Value) string {
	if v.IsNull() || !v.IsKnown() {
		return ""
	}
	if v.Type() == cty.Number {
		return v.AsBigFloat().Text('f', -1)
	}
	s, err := convert.Convert(v, cty.String)
	if err != nil {
		return ""
	}
	return s.AsString()
}

func itoa(i int) string { return strconv.Itoa(i) }

// sortedKeys returns m's keys in order, for deterministic iteration.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
