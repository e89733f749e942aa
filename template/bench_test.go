package template

import "testing"

// BenchmarkLoadHello decodes the hello example, digest included.
func BenchmarkLoadHello(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, err := Load("../examples/hello/hello.kiln.hcl", Options{Env: []string{}}); err != nil {
			b.Fatal(err)
		}
	}
}
