package provision

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// cloudInitStatus is the part of `cloud-init status --format json` kiln reads.
type cloudInitStatus struct {
	Status  string   `json:"status"`
	Errors  []string `json:"errors"`
	Detail  string   `json:"detail"`
	Recover []string `json:"recoverable_errors"`
}

// WaitCloudInit blocks until cloud-init has finished in the guest and
// returns an error listing cloud-init's own errors when it did not finish
// cleanly. Provisioning before cloud-init is done races with it (apt locks,
// users, hostnames), so kiln always waits.
func (c *Client) WaitCloudInit(ctx context.Context) error {
	// --wait exits non-zero on errors; the JSON that follows says which.
	_, _ = c.Run(ctx, "cloud-init status --wait >/dev/null 2>&1", nil, nil, nil)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	out, err := c.Output(ctx, "cloud-init status --format json")
	if err != nil && out == "" {
		return fmt.Errorf("read cloud-init status: %w", err)
	}
	return parseCloudInitStatus([]byte(out))
}

func parseCloudInitStatus(out []byte) error {
	var st cloudInitStatus
	if err := json.Unmarshal(out, &st); err != nil {
		return fmt.Errorf("read cloud-init status: %w", err)
	}
	if st.Status == "done" && len(st.Errors) == 0 {
		return nil
	}
	msg := "cloud-init finished with status " + st.Status
	if len(st.Errors) > 0 {
		msg += ": " + strings.Join(st.Errors, "; ")
	} else if st.Detail != "" {
		msg += ": " + st.Detail
	}
	return fmt.Errorf("%s (see /var/log/cloud-init.log in the guest)", msg)
}
