package bake

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRunStepsCleanupOrder(t *testing.T) {
	cases := []struct {
		name    string
		failAt  int // 0 = none
		keep    bool
		cancel  bool
		want    []string
		wantErr string
	}{
		{name: "success keeps everything", want: []string{"run a", "run b", "run c"}},
		{name: "failure undoes in reverse", failAt: 3, want: []string{"run a", "run b", "run c", "undo c", "undo b", "undo a"}, wantErr: "c: boom"},
		{name: "early failure undoes only what ran", failAt: 2, want: []string{"run a", "run b", "undo b", "undo a"}, wantErr: "b: boom"},
		{name: "abort keeps it for debugging", failAt: 2, keep: true, want: []string{"run a", "run b"}, wantErr: "b: boom"},
		{name: "interruption undoes", cancel: true, want: []string{"run a", "undo a"}, wantErr: "a: context canceled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var got []string
			mk := func(i int, name string) step {
				return step{
					name: name,
					run: func(context.Context) error {
						got = append(got, "run "+name)
						if c.cancel {
							cancel()
						}
						if i == c.failAt {
							return errors.New("boom")
						}
						return nil
					},
					cleanup: func() { got = append(got, "undo "+name) },
				}
			}
			var reported []string
			err := runSteps(ctx, []step{mk(1, "a"), mk(2, "b"), mk(3, "c")}, func(i, n int, name string, d time.Duration, err error) {
				reported = append(reported, name)
			}, c.keep)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || err.Error() != c.wantErr) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %v\nwant %v", got, c.want)
			}
			if len(reported) == 0 {
				t.Error("no step was reported")
			}
		})
	}
}

func TestLineWriterPrefixesRedactsAndKeepsTail(t *testing.T) {
	var out strings.Builder
	tail := &tailLines{n: 2}
	w := newLineWriter(&out, "  1| ", []string{"s3cret"}, tail)
	w.Write([]byte("one\ntw"))
	w.Write([]byte("o token=s3cret\r\nthree"))
	w.Flush()
	want := "  1| one\n  1| two token=<sensitive>\n  1| three\n"
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
	if tail.String() != "two token=<sensitive>\nthree" {
		t.Errorf("tail = %q", tail.String())
	}
}

func TestProvisionerErrorNamesStatus(t *testing.T) {
	err := &ProvisionerError{Index: 2, Type: "shell", Status: 3, Tail: "about to fail\nreally"}
	msg := err.Error()
	for _, want := range []string{"provisioner 2 (shell)", "exit status 3", "about to fail"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not contain %q", msg, want)
		}
	}
}

func TestDescribeAndRedactedVariables(t *testing.T) {
	ps := []Provisioner{
		{Type: "shell", Inline: []string{"a", "b"}},
		{Type: "shell", Scripts: []string{"/x/setup.sh"}},
		{Type: "file", Source: "/x/app", Destination: "/opt/app"},
		{Type: "file", Source: "/var/log/x", Destination: "/tmp/out/x", Direction: "download"},
	}
	want := []string{"shell: inline (2 commands)", "shell: setup.sh", "file: app -> /opt/app", "file: download /var/log/x -> x"}
	if got := describeProvisioners(ps); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	vars := redactedVariables([]Variable{{Name: "v", Value: "1"}, {Name: "token", Value: "abc", Sensitive: true}})
	if vars["v"] != "1" || vars["token"] != "(sensitive)" {
		t.Errorf("variables = %v", vars)
	}
}

// An interruption during any step of the real pipeline undoes exactly the
// steps that ran, newest first, and stops there.
func TestInterruptAtEachStep(t *testing.T) {
	b := &builder{}
	names := []string{}
	for _, s := range b.steps() {
		names = append(names, s.name)
	}
	for k := range names {
		t.Run(names[k], func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var got []string
			var steps []step
			for i, name := range names {
				steps = append(steps, step{
					name: name,
					run: func(ctx context.Context) error {
						got = append(got, "run "+name)
						if i == k {
							cancel() // Ctrl-C arrives while this step runs
							<-ctx.Done()
							return ctx.Err()
						}
						return nil
					},
					cleanup: func() { got = append(got, "undo "+name) },
				})
			}
			err := runSteps(ctx, steps, func(int, int, string, time.Duration, error) {}, false)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			var want []string
			for i := 0; i <= k; i++ {
				want = append(want, "run "+names[i])
			}
			for i := k; i >= 0; i-- {
				want = append(want, "undo "+names[i])
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %v\nwant %v", got, want)
			}
		})
	}
}
