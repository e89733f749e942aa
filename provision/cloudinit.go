package provision

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// waitResult waits in the guest for cloud-init's result file, which its
// final stage writes with every stage's errors, and prints it. It exits 3
// when cloud-init is disabled and no result will come. A shell loop rather
// than `cloud-init status --wait`: each cloud-init command starts Python,
// seconds of CPU under TCG taken from the very stages being waited for.
const waitResult = `while [ ! -e /run/cloud-init/result.json ]; do
  [ -e /run/cloud-init/disabled ] && exit 3
  sleep 0.25
done
cat /run/cloud-init/result.json`

// cloudInitResult is /run/cloud-init/result.json.
type cloudInitResult struct {
	V1 *struct {
		Datasource string   `json:"datasource"`
		Errors     []string `json:"errors"`
	} `json:"v1"`
}

// cloudInitStatus is the part of `cloud-init status --format json` kiln reads.
type cloudInitStatus struct {
	Status string   `json:"status"`
	Errors []string `json:"errors"`
	Detail string   `json:"detail"`
}

// WaitCloudInit blocks until cloud-init has finished in the guest and
// returns an error listing cloud-init's own errors when it did not finish
// cleanly. Provisioning before cloud-init is done races with it (apt locks,
// users, hostnames), so kiln always waits.
func (c *Client) WaitCloudInit(ctx context.Context) error {
	var out, errb strings.Builder
	status, err := c.Run(ctx, waitResult, nil, &out, &errb)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("wait for cloud-init: %w", err)
	case status == 0:
		return parseCloudInitResult([]byte(out.String()))
	}
	// Disabled, or a shell that could not run the loop: ask cloud-init.
	st, err := c.Output(ctx, "cloud-init status --format json")
	if err != nil && st == "" {
		return fmt.Errorf("read cloud-init status: %w", err)
	}
	return parseCloudInitStatus([]byte(st))
}

func parseCloudInitResult(out []byte) error {
	var r cloudInitResult
	if err := json.Unmarshal(out, &r); err != nil || r.V1 == nil {
		return fmt.Errorf("read cloud-init's result.json: not the JSON cloud-init writes: %.200q", out)
	}
	if len(r.V1.Errors) == 0 {
		return nil
	}
	return cloudInitError("error", r.V1.Errors, "")
}

func parseCloudInitStatus(out []byte) error {
	var st cloudInitStatus
	if err := json.Unmarshal(out, &st); err != nil {
		return fmt.Errorf("read cloud-init status: %w", err)
	}
	if st.Status == "done" && len(st.Errors) == 0 {
		return nil
	}
	return cloudInitError(st.Status, st.Errors, st.Detail)
}

func cloudInitError(status string, errs []string, detail string) error {
	msg := "cloud-init finished with status " + status
	if len(errs) > 0 {
		msg += ": " + strings.Join(errs, "; ")
	} else if detail != "" {
		msg += ": " + detail
	}
	return fmt.Errorf("%s (see /var/log/cloud-init.log in the guest)", msg)
}
