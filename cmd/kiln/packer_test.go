package main

import (
	"reflect"
	"testing"

	"github.com/spf13/pflag"

	"github.com/kiln-dev/kiln/packer"
)

func TestPackerArgs(t *testing.T) {
	in := []string{"-var", "a=1", "-var-file=prod.pkrvars.hcl", "-only=qemu.x", "-force", "-on-error=abort", "-debug", "--var", "b=2", "-o", ".", "--", "-var"}
	want := []string{"--var", "a=1", "--var-file=prod.pkrvars.hcl", "--only=qemu.x", "--force", "--on-error=abort", "--debug", "--var", "b=2", "-o", ".", "--", "-var"}
	if got := packerArgs(in); !reflect.DeepEqual(got, want) {
		t.Errorf("packerArgs = %q", got)
	}
}

// TestOrderedVars: -var and -var-file keep their command-line order for
// Packer templates, and still split into kiln's Options for kiln templates.
func TestOrderedVars(t *testing.T) {
	fs := newFlags("build", "")
	var tf templateFlags
	tf.add(fs)
	var pf packerFlags
	pf.add(fs)
	if err := parseFlags(fs, packerArgs([]string{"-var", "a=1", "-var-file", "f.hcl", "-var=b=x=y", "t.pkr.hcl", "-except", "qemu.a,qemu.b"})); err != nil {
		t.Fatal(err)
	}
	want := []packer.VarArg{{Name: "a", Value: "1"}, {File: "f.hcl"}, {Name: "b", Value: "x=y"}}
	if !reflect.DeepEqual(tf.ordered, want) || !reflect.DeepEqual(pf.except, []string{"qemu.a", "qemu.b"}) {
		t.Errorf("ordered = %+v, except = %q", tf.ordered, pf.except)
	}
	o, err := tf.options()
	if err != nil || o.Vars["a"] != "1" || o.Vars["b"] != "x=y" || len(o.VarFiles) != 1 {
		t.Errorf("options = %+v, %v", o, err)
	}
	if err := parseFlags(newFlagsWithVars(), []string{"--var", "novalue"}); err == nil {
		t.Error("--var without = accepted")
	}
}

func newFlagsWithVars() *pflag.FlagSet {
	fs := newFlags("build", "")
	var tf templateFlags
	tf.add(fs)
	return fs
}
