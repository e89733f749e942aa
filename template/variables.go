package template

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/kiln-dev/kiln/bake"
)

// envPrefix marks environment variables that set template variables, as
// TF_VAR_ and PKR_VAR_ do for Terraform and Packer.
const envPrefix = "KILN_VAR_"

// variable is a declared template variable and, once resolved, its value.
type variable struct {
	name      string
	typ       cty.Type
	def       cty.Value // cty.NilVal when there is no default
	sensitive bool
	decl      hcl.Range
	value     cty.Value // unknown when missing or invalid, so dependents are skipped
	set       bool
}

var variableSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "default"},
		{Name: "type"},
		{Name: "description"},
		{Name: "sensitive"},
	},
}

// declare records a variable block.
func (l *loader) declare(b *hcl.Block) {
	name := b.Labels[0]
	content, diags := b.Body.Content(variableSchema)
	l.diags = append(l.diags, diags...)
	if !hclsyntax.ValidIdentifier(name) {
		l.diags = append(l.diags, diagAt(b.LabelRanges[0].Ptr(), "Invalid variable name",
			"%q cannot be a variable name: names are letters, digits, _ and -, starting with a letter.", name))
		return
	}
	if prev, dup := l.vars[name]; dup {
		l.diags = append(l.diags, diagAt(b.LabelRanges[0].Ptr(), "Duplicate variable",
			"Variable %q was already declared at %s.", name, pos(prev.decl)))
		return
	}
	v := &variable{name: name, typ: cty.String, decl: b.DefRange}
	if attr := content.Attributes["type"]; attr != nil {
		switch kw := hcl.ExprAsKeyword(attr.Expr); kw {
		case "string":
		case "number":
			v.typ = cty.Number
		case "bool":
			v.typ = cty.Bool
		default:
			l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid variable type",
				"The type of a variable is string, number or bool.%s", didYouMean(kw, []string{"string", "number", "bool"})))
		}
	}
	if d, ok := l.value(content.Attributes["default"], v.typ); ok {
		v.def = d
	}
	l.value(content.Attributes["description"], cty.String)
	if s, ok := l.value(content.Attributes["sensitive"], cty.Bool); ok {
		v.sensitive = s.True()
	}
	l.vars[name] = v
	l.varOrder = append(l.varOrder, name)
}

// resolveVariables gives every declared variable its value, applying the
// sources from lowest precedence to highest so that later ones win.
func (l *loader) resolveVariables() {
	for _, v := range l.vars {
		if v.def != cty.NilVal {
			v.value, v.set = v.def, true
		}
	}

	for _, k := range sortedKeys(l.st.env) {
		name, ok := strings.CutPrefix(k, envPrefix)
		if !ok {
			continue
		}
		// Undeclared ones are ignored: the environment is shared by every
		// template a user builds.
		if v := l.vars[name]; v != nil {
			l.setRaw(v, l.st.env[k], "The environment variable "+k)
		}
	}

	for _, f := range l.opts.VarFiles {
		l.readVarFile(f)
	}

	for _, name := range sortedKeys(l.opts.Vars) {
		v := l.vars[name]
		if v == nil {
			l.diags = append(l.diags, diagAt(nil, "Undeclared variable",
				"A value was given with --var for %q, but the template declares no variable of that name.%s",
				name, didYouMean(name, l.varOrder)))
			continue
		}
		l.setRaw(v, l.opts.Vars[name], fmt.Sprintf("The value given with --var for %q", name))
	}

	for _, name := range l.varOrder {
		v := l.vars[name]
		if !v.set {
			l.diags = append(l.diags, diagAt(v.decl.Ptr(), "Missing value for variable",
				"Variable %q has no default and no value was given: use --var %s=VALUE, a --var-file, or set %s%s.",
				name, name, envPrefix, name))
			v.value = cty.UnknownVal(v.typ)
		}
	}
}

// setRaw sets v from a string typed by a user, converting it to v's type.
func (l *loader) setRaw(v *variable, raw, source string) {
	cv, err := convertTo(cty.StringVal(raw), v.typ)
	if err != nil {
		// The value is not repeated: it may be a secret.
		l.diags = append(l.diags, diagAt(nil, "Invalid value for variable",
			"%s is not a valid %s: %s.", source, v.typ.FriendlyName(), err))
		v.value, v.set = cty.UnknownVal(v.typ), true
		return
	}
	v.value, v.set = cv, true
}

// readVarFile applies a var file: HCL attributes name = value, constants
// only, like a Terraform .tfvars file.
func (l *loader) readVarFile(path string) {
	src, err := readSource(path, maxVarFileSize)
	if err != nil {
		l.diags = append(l.diags, diagAt(&hcl.Range{Filename: path}, "Cannot read var file", "%s", readProblem(err)))
		return
	}
	if ds := checkDepth(src, path); ds != nil {
		l.diags = append(l.diags, ds...)
		return
	}
	file, diags := l.parse(src, path)
	if !diags.HasErrors() {
		diags = append(diags, checkLiterals(file.Body)...)
	}
	l.diags = append(l.diags, diags...)
	if diags.HasErrors() {
		return
	}
	attrs, diags := file.Body.JustAttributes()
	l.diags = append(l.diags, diags...)
	for _, name := range sortedKeys(attrs) {
		attr := attrs[name]
		v := l.vars[name]
		if v == nil {
			l.diags = append(l.diags, diagAt(attr.NameRange.Ptr(), "Undeclared variable",
				"The var file sets %q, but the template declares no variable of that name.%s",
				name, didYouMean(name, l.varOrder)))
			continue
		}
		val, diags := attr.Expr.Value(nil)
		l.diags = append(l.diags, diags...)
		if diags.HasErrors() {
			v.value, v.set = cty.UnknownVal(v.typ), true
			continue
		}
		cv, err := convertTo(val, v.typ)
		if err == nil && cv.IsNull() {
			err = fmt.Errorf("null is not a value")
		}
		if err != nil {
			l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid value for variable",
				"Variable %q is a %s: %s.", name, v.typ.FriendlyName(), err))
			v.value, v.set = cty.UnknownVal(v.typ), true
			continue
		}
		v.value, v.set = cv, true
	}
}

// specVariables lists the variables as used, sorted by name.
func (l *loader) specVariables() []bake.Variable {
	out := []bake.Variable{}
	for _, name := range sortedKeys(l.vars) {
		v := l.vars[name]
		out = append(out, bake.Variable{Name: name, Value: valueString(v.value), Sensitive: v.sensitive})
	}
	return out
}
