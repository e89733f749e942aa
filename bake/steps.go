package bake

import (
	"context"
	"fmt"
	"time"
)

// step is one phase of the pipeline. cleanup, when set, undoes what run did;
// it runs (in reverse order of the steps) only when a later step fails or
// the build is interrupted, so a finished build keeps its results.
type step struct {
	name    string
	run     func(ctx context.Context) error
	cleanup func()
}

// StepError says which step failed.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// runSteps runs steps in order, reporting each with its duration. When one
// fails, the cleanups of the steps that ran (the failing one included) run
// in reverse order, unless keep is true (--on-error=abort keeps them for
// debugging).
func runSteps(ctx context.Context, steps []step, report func(i, n int, name string, d time.Duration, err error), keep bool) error {
	var done []step
	for i, s := range steps {
		start := time.Now()
		done = append(done, s)
		err := s.run(ctx)
		if ctx.Err() != nil {
			// Interrupted: whatever the step saw (a closed connection, a
			// killed subprocess) is a symptom of the interruption.
			err = ctx.Err()
		}
		report(i+1, len(steps), s.name, time.Since(start), err)
		if err != nil {
			if !keep {
				for j := len(done) - 1; j >= 0; j-- {
					if done[j].cleanup != nil {
						done[j].cleanup()
					}
				}
			}
			return &StepError{Step: s.name, Err: err}
		}
	}
	return nil
}

// durationString prints durations the way the progress lines want them.
func durationString(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}
