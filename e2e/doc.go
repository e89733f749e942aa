// Package e2e boots real VMs with real QEMU, cloud-init and OpenSSH through
// the kiln binary, as a user would. Its tests build only with -tags e2e
// (make e2e), so `go test ./...` shows the package as having no test files
// instead of passing it without running anything.
package e2e
