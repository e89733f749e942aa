// Package disk wraps qemu-img so the rest of kiln can create, inspect, grow,
// convert and check VM disk images without knowing its flags or output format.
package disk

import (
	"fmt"
	"math"
	"strconv"
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

// ParseSize turns a human size into bytes. Units are binary, like qemu-img:
// K, M, G, T with an optional "i", "iB" or "B" ("4G", "4GiB" and "4GB" all mean
// 4 GiB), case-insensitive; a bare number is bytes. Fractions are allowed with a
// unit ("1.5G") and rounded down to whole bytes.
func ParseSize(s string) (int64, error) {
	bad := func() (int64, error) {
		return 0, fmt.Errorf("invalid size %q: use a number with K, M, G or T, e.g. 4G", s)
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return bad()
	}
	// Split the number from the unit.
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	if num == "" {
		return bad()
	}
	var mult int64
	switch strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I") {
	case "":
		if unit != "" && unit != "B" { // "IB" alone is not a unit
			return bad()
		}
		mult = 1
	case "K":
		mult = KiB
	case "M":
		mult = MiB
	case "G":
		mult = GiB
	case "T":
		mult = TiB
	default:
		return bad()
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > maxSize/mult {
			if err == nil || strings.Contains(err.Error(), "range") {
				return 0, fmt.Errorf("invalid size %q: too large", s)
			}
			return bad()
		}
		return n * mult, nil
	}
	if mult == 1 {
		return 0, fmt.Errorf("invalid size %q: a byte count must be a whole number", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) {
		return bad()
	}
	b := f * float64(mult)
	if b > maxSize {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return int64(b), nil
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
