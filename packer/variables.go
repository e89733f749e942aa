package packer

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/kiln-dev/kiln/bake"
	"github.com/kiln-dev/kiln/template"
)

// envPrefix is Packer's: PKR_VAR_name sets var.name.
const envPrefix = "PKR_VAR_"

type variable struct {
	name        string
	typ         cty.Type // cty.DynamicPseudoType when untyped
	def         cty.Value
	sensitive   bool
	decl        hcl.Range
	validations []*hcl.Block
	value       cty.Value
	set         bool
	source      string // where the value came from, for messages
}

var variableSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "default"}, {Name: "type"}, {Name: "description"}, {Name: "sensitive"}, {Name: "nullable"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "validation"}},
}

var validationSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "condition", Required: true}, {Name: "error_message", Required: true}},
}

func (l *loader) constCtx() *hcl.EvalContext { return &hcl.EvalContext{Functions: l.fs.Funcs} }

func (l *loader) declare(b *hcl.Block) {
	name := b.Labels[0]
	content, diags := b.Body.Content(variableSchema)
	l.diags = append(l.diags, diags...)
	if prev := l.vars[name]; prev != nil {
		l.diags = append(l.diags, diagAt(b.LabelRanges[0].Ptr(), "Duplicate variable",
			"Variable %q was already declared at %s.", name, pos(prev.decl)))
		return
	}
	v := &variable{name: name, typ: cty.DynamicPseudoType, decl: b.DefRange}
	if attr := content.Attributes["type"]; attr != nil {
		ty, diags := typeexpr.TypeConstraint(attr.Expr)
		l.diags = append(l.diags, diags...)
		if !diags.HasErrors() {
			v.typ = ty
		}
	}
	if attr := content.Attributes["default"]; attr != nil {
		val, diags := attr.Expr.Value(l.constCtx())
		l.diags = append(l.diags, diags...)
		if !diags.HasErrors() && !val.IsNull() {
			if cv, err := convert.Convert(val, v.typ); err != nil {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid default value for variable",
					"The default of %q is not a %s: %s.", name, v.typ.FriendlyName(), err))
			} else {
				v.def = cv
			}
		}
	}
	if attr := content.Attributes["sensitive"]; attr != nil {
		val, diags := attr.Expr.Value(l.constCtx())
		l.diags = append(l.diags, diags...)
		if !diags.HasErrors() && val.Type() == cty.Bool && val.IsKnown() && !val.IsNull() {
			v.sensitive = val.True()
		}
	}
	for _, vb := range content.Blocks {
		v.validations = append(v.validations, vb)
	}
	l.vars[name] = v
	l.varOrder = append(l.varOrder, name)
}

// declareLegacy reads the older variables { name = default } block.
func (l *loader) declareLegacy(b *hcl.Block) {
	attrs, diags := b.Body.JustAttributes()
	l.diags = append(l.diags, diags...)
	for _, name := range sortedKeys(attrs) {
		attr := attrs[name]
		val, diags := attr.Expr.Value(l.constCtx())
		l.diags = append(l.diags, diags...)
		v := &variable{name: name, typ: cty.DynamicPseudoType, decl: attr.Range}
		if !diags.HasErrors() && !val.IsNull() {
			v.def = val
		}
		l.vars[name] = v
		l.varOrder = append(l.varOrder, name)
	}
}

// resolveVariables applies Packer's precedence, lowest first: defaults,
// PKR_VAR_ environment variables, *.auto.pkrvars.hcl files (lexical
// order), then -var and -var-file in command-line order.
func (l *loader) resolveVariables(autoFiles []string) {
	for _, v := range l.vars {
		if v.def != cty.NilVal {
			v.value, v.set, v.source = v.def, true, "its default"
		}
	}
	for _, k := range sortedKeys(l.env) {
		name, ok := strings.CutPrefix(k, envPrefix)
		if !ok {
			continue
		}
		if v := l.vars[name]; v != nil {
			l.setRaw(v, l.env[k], nil, "the environment variable "+k)
		}
	}
	for _, f := range autoFiles {
		l.readVarFile(f)
	}
	for _, a := range l.opts.Vars {
		if a.File != "" {
			l.readVarFile(a.File)
			continue
		}
		v := l.vars[a.Name]
		if v == nil {
			l.diags = append(l.diags, diagAt(nil, "Undefined -var variable",
				"A value was given with -var for %q, but the template declares no variable of that name.%s",
				a.Name, template.DidYouMean(a.Name, l.varOrder)))
			continue
		}
		l.setRaw(v, a.Value, nil, fmt.Sprintf("the value given with -var for %q", a.Name))
	}
	for _, name := range l.varOrder {
		v := l.vars[name]
		if !v.set {
			l.diags = append(l.diags, diagAt(v.decl.Ptr(), "Unset variable",
				"Variable %q has no default and no value was given: use -var %s=VALUE, a -var-file, a *.auto.pkrvars.hcl file, or set %s%s.",
				name, name, envPrefix, name))
			v.value = cty.DynamicVal
		}
	}
	l.validateVariables()
	vars := map[string]cty.Value{}
	for name, v := range l.vars {
		vars[name] = v.value
	}
	l.ctx = &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var": cty.ObjectVal(vars),
			"path": cty.ObjectVal(map[string]cty.Value{
				"root": cty.StringVal(l.root),
				"cwd":  cty.StringVal(l.cwd),
			}),
			"packer": cty.ObjectVal(map[string]cty.Value{"version": cty.StringVal("1.11.2")}),
		},
		Functions: l.fs.Funcs,
	}
}

// setRaw sets v from a string from the command line or the environment: a
// string variable takes it as it is, others parse it as an HCL expression,
// as Packer does.
func (l *loader) setRaw(v *variable, raw string, rng *hcl.Range, source string) {
	val := cty.StringVal(raw)
	if v.typ != cty.String && v.typ != cty.DynamicPseudoType {
		expr, diags := hclsyntax.ParseExpression([]byte(raw), source, hcl.InitialPos)
		if !diags.HasErrors() {
			val, diags = expr.Value(nil)
		}
		if diags.HasErrors() {
			// The value is not repeated: it may be a secret.
			l.diags = append(l.diags, diagAt(rng, "Invalid value for variable",
				"%s is not a valid %s.", upperFirst(source), v.typ.FriendlyName()))
			v.value, v.set = cty.DynamicVal, true
			return
		}
	}
	l.setValue(v, val, rng, source)
}

func (l *loader) setValue(v *variable, val cty.Value, rng *hcl.Range, source string) {
	cv, err := convert.Convert(val, v.typ)
	if err != nil {
		l.diags = append(l.diags, diagAt(rng, "Invalid value for variable",
			"%s is not a valid %s: %s.", upperFirst(source), v.typ.FriendlyName(), err))
		v.value, v.set = cty.DynamicVal, true
		return
	}
	v.value, v.set, v.source = cv, true, source
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// readVarFile applies a .pkrvars.hcl file: name = value lines.
func (l *loader) readVarFile(path string) {
	f := l.parseFile(path)
	if f == nil {
		return
	}
	attrs, diags := f.Body.JustAttributes()
	l.diags = append(l.diags, diags...)
	for _, name := range sortedKeys(attrs) {
		attr := attrs[name]
		v := l.vars[name]
		if v == nil {
			// Packer warns and goes on: a var file is often shared.
			l.notes = append(l.notes, fmt.Sprintf("%s sets %q, which the template does not declare (ignored, as Packer does)", pos(attr.NameRange), name))
			continue
		}
		val, diags := attr.Expr.Value(l.constCtx())
		l.diags = append(l.diags, diags...)
		if diags.HasErrors() {
			v.value, v.set = cty.DynamicVal, true
			continue
		}
		l.setValue(v, val, attr.Expr.Range().Ptr(), fmt.Sprintf("the value of %q in %s", name, path))
	}
}

// validateVariables runs each variable's validation blocks.
func (l *loader) validateVariables() {
	for _, name := range l.varOrder {
		v := l.vars[name]
		if !v.value.IsWhollyKnown() {
			continue
		}
		ctx := &hcl.EvalContext{
			Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{name: v.value})},
			Functions: l.fs.Funcs,
		}
		for _, vb := range v.validations {
			content, diags := vb.Body.Content(validationSchema)
			l.diags = append(l.diags, diags...)
			if diags.HasErrors() {
				continue
			}
			cond, diags := content.Attributes["condition"].Expr.Value(ctx)
			l.diags = append(l.diags, diags...)
			if diags.HasErrors() {
				continue
			}
			if cond.Type() != cty.Bool || cond.IsNull() {
				l.diags = append(l.diags, diagAt(content.Attributes["condition"].Expr.Range().Ptr(), "Invalid validation condition",
					"The condition must be true or false."))
				continue
			}
			if cond.True() {
				continue
			}
			msg, diags := content.Attributes["error_message"].Expr.Value(ctx)
			text := "the value is not valid"
			if !diags.HasErrors() && msg.Type() == cty.String && !msg.IsNull() {
				text = msg.AsString()
			}
			l.diags = append(l.diags, diagAt(v.decl.Ptr(), "Invalid value for variable",
				"%s (var.%s, from %s; checked by the validation rule at %s).", strings.TrimSuffix(text, "."), name, v.source, pos(vb.DefRange)))
		}
	}
}

// evalLocals evaluates locals in dependency order: each pass evaluates
// those whose references are known, until none is left.
func (l *loader) evalLocals(blocks []*hcl.Block) {
	type pending struct {
		name string
		expr hcl.Expression
		rng  hcl.Range
	}
	var todo []pending
	seen := map[string]hcl.Range{}
	add := func(name string, expr hcl.Expression, rng hcl.Range) {
		if prev, dup := seen[name]; dup {
			l.diags = append(l.diags, diagAt(rng.Ptr(), "Duplicate local", "local.%s is already defined at %s.", name, pos(prev)))
			return
		}
		seen[name] = rng
		todo = append(todo, pending{name, expr, rng})
	}
	for _, b := range blocks {
		if b.Type == "locals" {
			attrs, diags := b.Body.JustAttributes()
			l.diags = append(l.diags, diags...)
			for _, name := range sortedKeys(attrs) {
				add(name, attrs[name].Expr, attrs[name].Range)
			}
			continue
		}
		content, diags := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "expression", Required: true}, {Name: "sensitive"}}})
		l.diags = append(l.diags, diags...)
		if diags.HasErrors() {
			continue
		}
		add(b.Labels[0], content.Attributes["expression"].Expr, b.DefRange)
		if attr := content.Attributes["sensitive"]; attr != nil {
			if val, diags := attr.Expr.Value(l.constCtx()); !diags.HasErrors() && val.Type() == cty.Bool && val.True() {
				l.secrets[b.Labels[0]] = true
			}
		}
	}
	for len(todo) > 0 {
		var next []pending
		for _, p := range todo {
			ready := true
			for _, tr := range p.expr.Variables() {
				if tr.RootName() != "local" || len(tr) < 2 {
					continue
				}
				if a, ok := tr[1].(hcl.TraverseAttr); ok {
					if _, done := l.locals[a.Name]; !done {
						if _, known := seen[a.Name]; known {
							ready = false
						}
					}
				}
			}
			if !ready {
				next = append(next, p)
				continue
			}
			l.ctx.Variables["local"] = cty.ObjectVal(l.locals)
			val, diags := p.expr.Value(l.ctx)
			l.diags = append(l.diags, diags...)
			if diags.HasErrors() {
				val = cty.DynamicVal
			}
			l.locals[p.name] = val
		}
		if len(next) == len(todo) {
			for _, p := range next {
				l.diags = append(l.diags, diagAt(p.rng.Ptr(), "Local refers to itself",
					"local.%s depends on itself through other locals.", p.name))
			}
			break
		}
		todo = next
	}
	l.ctx.Variables["local"] = cty.ObjectVal(l.locals)
}

// specVariables lists variables and sensitive locals as used, for the
// manifest (sensitive ones redacted) and the build's secret filter.
func (l *loader) specVariables() []bake.Variable {
	out := []bake.Variable{}
	for _, name := range sortedKeys(l.vars) {
		v := l.vars[name]
		out = append(out, bake.Variable{Name: name, Value: valueString(v.value), Sensitive: v.sensitive})
	}
	for _, name := range sortedKeys(l.secrets) {
		out = append(out, bake.Variable{Name: "local." + name, Value: valueString(l.locals[name]), Sensitive: true})
	}
	return out
}

func valueString(v cty.Value) string {
	if v == cty.NilVal || !v.IsWhollyKnown() || v.IsNull() {
		return ""
	}
	if v.Type() == cty.String {
		return v.AsString()
	}
	b, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		return ""
	}
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func diagAt(rng *hcl.Range, summary, format string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: rng}
}

func pos(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

func readProblem(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
