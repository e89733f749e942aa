package template

import (
	"fmt"
	"math/big"
	"strings"
)

// parseSize parses sizes such as "4G", "512M", "1.5GiB" or "10GB" into
// bytes. Units are powers of 1024 whatever their spelling ("GB" means GiB,
// as in qemu-img) and are case-insensitive; a bare number is bytes. It
// mirrors disk.ParseSize but is kept local so the two packages can be
// written independently.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" || strings.Count(num, ".") > 1 || num[0] == '.' || num[len(num)-1] == '.' {
		return 0, fmt.Errorf("invalid size %q: want a number and a unit, like \"4G\" or \"512M\"", s)
	}
	var shift uint
	switch strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(unit), "IB"), "B") {
	case "":
		// Bare number or "B": bytes.
	case "K":
		shift = 10
	case "M":
		shift = 20
	case "G":
		shift = 30
	case "T":
		shift = 40
	default:
		return 0, fmt.Errorf("invalid size %q: unknown unit %q; use K, M, G or T", s, unit)
	}
	if strings.EqualFold(unit, "iB") {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q; use K, M, G or T", s, unit)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), shift)))
	if !r.IsInt() {
		return 0, fmt.Errorf("invalid size %q: not a whole number of bytes", s)
	}
	n := r.Num()
	if !n.IsInt64() {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n.Int64(), nil
}

// hasSizeUnit reports whether s ends in a unit letter. A bare number is
// valid for parseSize but ambiguous in a template: Packer users write
// memory = 2048 meaning MiB, so kiln asks for the unit instead of guessing.
func hasSizeUnit(s string) bool {
	t := strings.TrimSpace(s)
	if t == "" {
		return false
	}
	c := t[len(t)-1]
	return c < '0' || c > '9'
}
