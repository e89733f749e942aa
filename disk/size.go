// Package disk wraps qemu-img so the rest of kiln can create, inspect, grow,
// convert and check VM disk images without knowing its flags or output format.
package disk

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

// Binary units, as qemu-img uses them: "4G" means 4 GiB.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
	TiB int64 = 1 << 40
)

// maxSize keeps sizes far below int64 overflow and well above any real disk.
const maxSize = 1 << 60

// ParseSize turns a human size into bytes. It is the one size syntax of
// kiln: flags, templates and fleet files all use it. Units are binary, like
// qemu-img: K, M, G, T with an optional "i", "iB" or "B" ("4G", "4Gi",
// "4GiB" and "4GB" all mean 4 GiB), case-insensitive; a bare number is
// bytes. Fractions are allowed when they make whole bytes ("1.5G"; "0.3K"
// is refused, not rounded).
func ParseSize(s string) (int64, error) {
	bad := func() (int64, error) {
		return 0, fmt.Errorf("invalid size %q: use a number with K, M, G or T, e.g. 4G", s)
	}
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, rawUnit := t[:i], strings.TrimSpace(t[i:])
	unit := strings.ToUpper(rawUnit)
	badUnit := func() (int64, error) {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q; use K, M, G or T", s, rawUnit)
	}
	if num == "" || strings.Count(num, ".") > 1 || num[0] == '.' || num[len(num)-1] == '.' {
		return bad()
	}
	var shift uint
	switch strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I") {
	case "":
		if unit != "" && unit != "B" { // "IB" alone is not a unit
			return badUnit()
		}
	case "K":
		shift = 10
	case "M":
		shift = 20
	case "G":
		shift = 30
	case "T":
		shift = 40
	default:
		return badUnit()
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return bad()
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), shift)))
	if !r.IsInt() {
		return 0, fmt.Errorf("invalid size %q: not a whole number of bytes", s)
	}
	if n := r.Num(); n.IsInt64() && n.Int64() <= maxSize {
		return n.Int64(), nil
	}
	return 0, fmt.Errorf("invalid size %q: too large", s)
}

// HasUnit reports whether a size ends in a unit. A bare number is bytes to
// ParseSize but ambiguous from people ("memory = 2048" means MiB to a Packer
// user, "--disk-size 8" means 8G), so kiln asks them for the unit.
func HasUnit(s string) bool {
	t := strings.TrimSpace(s)
	return t != "" && (t[len(t)-1] < '0' || t[len(t)-1] > '9')
}

// FormatSize renders bytes for people, with one decimal and binary units
// ("4.0 GiB"), matching how qemu-img reports virtual sizes.
func FormatSize(n int64) string {
	if n < 0 {
		return "-" + FormatSize(-n)
	}
	if n < KiB {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n) / float64(KiB)
	u := 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	// Avoid "1024.0 KiB" when rounding pushes a value over the next unit.
	if math.Round(v*10)/10 >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	return fmt.Sprintf("%.1f %s", v, units[u])
}
