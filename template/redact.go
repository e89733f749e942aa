package template

import (
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Secrets in diagnostics. A sensitive variable's value, the contents of a
// file read by file() or templatefile(), and every value computed from
// them are never printed: a diagnostic names the source and what was
// expected, not the value. The values carry cty marks through HCL's
// evaluation (functions and operators keep them), so a value made from a
// secret is known to be one; each is recorded when its attribute is
// evaluated, and redact replaces them in every diagnostic at the end.

// sensitiveMark marks the value of a variable declared sensitive.
type sensitiveMark struct{ name string }

// fileMark marks what file() or templatefile() read from a file.
type fileMark struct{ path string }

// secret is a value not to print and what to print instead.
type secret struct {
	text  string
	label string
}

// taint is an attribute whose value came from secrets: in diagnostics
// about it even short secrets are replaced.
type taint struct {
	rng     hcl.Range
	secrets []secret
}

// markSensitive marks v's value for the evaluation context when v is
// sensitive, and records it as a secret.
func (l *loader) markSensitive(v *variable) cty.Value {
	if !v.sensitive || !v.value.IsKnown() || v.value.IsNull() {
		return v.value
	}
	l.secrets = append(l.secrets, secret{text: valueString(v.value), label: "<sensitive var." + v.name + ">"})
	return v.value.Mark(sensitiveMark{v.name})
}

// unmark takes the marks off a value of attr, recording its parts as
// secrets (labelled by where they came from) and attr as tainted.
func (l *loader) unmark(attr *hcl.Attribute, v cty.Value) cty.Value {
	if !v.ContainsMarked() {
		return v
	}
	v, marks := v.UnmarkDeep()
	var from []string
	whole := map[string]string{} // a file's contents as read → its label
	for m := range marks {
		switch m := m.(type) {
		case sensitiveMark:
			from = append(from, "sensitive var."+m.name)
		case fileMark:
			from = append(from, "the contents of "+m.path)
			if in, ok := l.st.reads[l.st.resolve(m.path)]; ok {
				whole[string(in.data)] = "<the contents of " + m.path + ">"
			}
		}
	}
	sort.Strings(from)
	label := "<value from " + strings.Join(from, " and ") + ">"
	t := taint{rng: attr.Range}
	for _, s := range primitiveStrings(v) {
		sec := secret{text: s, label: label}
		for _, known := range l.secrets { // the secret itself keeps its own name
			if known.text == s {
				sec.label = known.label
			}
		}
		if w, ok := whole[s]; ok {
			sec.label = w
		}
		t.secrets = append(t.secrets, sec)
	}
	l.secrets = append(l.secrets, t.secrets...)
	l.taints = append(l.taints, t)
	return v
}

// primitiveStrings lists the strings, numbers and bools inside v as text.
func primitiveStrings(v cty.Value) []string {
	if v.IsNull() || !v.IsKnown() {
		return nil
	}
	ty := v.Type()
	switch {
	case ty.IsPrimitiveType():
		if s := valueString(v); s != "" {
			return []string{s}
		}
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType() || ty.IsMapType() || ty.IsObjectType():
		var out []string
		for it := v.ElementIterator(); it.Next(); {
			_, ev := it.Element()
			out = append(out, primitiveStrings(ev)...)
		}
		return out
	}
	return nil
}

// minBareSecret is the shortest secret replaced wherever it appears in a
// diagnostic's text; a shorter one ("1", "yes") is replaced where quoted,
// and anywhere only in diagnostics about an attribute it tainted, so that
// unrelated messages are not mangled.
const minBareSecret = 4

// redact replaces every secret in ds (longest first, so a secret that
// contains another goes whole).
func (l *loader) redact(ds Diagnostics) Diagnostics {
	secrets := append([]secret(nil), l.secrets...)
	for path, in := range l.st.reads {
		secrets = append(secrets, secret{text: string(in.data), label: "<the contents of " + l.rel(path) + ">"})
	}
	if len(secrets) == 0 {
		return ds
	}
	sort.SliceStable(secrets, func(i, j int) bool { return len(secrets[i].text) > len(secrets[j].text) })
	out := make(Diagnostics, len(ds))
	for i, d := range ds {
		tainted := l.taintsAt(d)
		for _, s := range secrets {
			if s.text == "" {
				continue
			}
			d.Detail = strings.ReplaceAll(d.Detail, strconv.Quote(s.text), s.label)
			if len(s.text) >= minBareSecret || tainted[s.text] {
				d.Detail = strings.ReplaceAll(d.Detail, s.text, s.label)
			}
		}
		out[i] = d
	}
	return out
}

// taintsAt returns the secrets of the tainted attributes d points into.
func (l *loader) taintsAt(d Diagnostic) map[string]bool {
	hit := map[string]bool{}
	for _, t := range l.taints {
		r := t.rng
		if d.File != r.Filename || d.Line < r.Start.Line || d.Line > r.End.Line ||
			(d.Line == r.Start.Line && d.Column < r.Start.Column) || (d.Line == r.End.Line && d.Column > r.End.Column) {
			continue
		}
		for _, s := range t.secrets {
			hit[s.text] = true
		}
	}
	return hit
}

// taintRefs marks attr as tainted by the sensitive variables it refers to,
// before it is evaluated: if the evaluation fails, its diagnostics must
// not show them either.
func (l *loader) taintRefs(attr *hcl.Attribute) {
	t := taint{rng: attr.Range}
	for _, tr := range attr.Expr.Variables() {
		if tr.RootName() != "var" || len(tr) < 2 {
			continue
		}
		step, ok := tr[1].(hcl.TraverseAttr)
		if !ok {
			continue
		}
		if v := l.vars[step.Name]; v != nil && v.sensitive && v.value.IsKnown() && !v.value.IsNull() {
			t.secrets = append(t.secrets, secret{text: valueString(v.value), label: "<sensitive var." + v.name + ">"})
		}
	}
	if len(t.secrets) > 0 {
		l.taints = append(l.taints, t)
	}
}
