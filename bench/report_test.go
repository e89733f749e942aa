package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestSummary(t *testing.T) {
	for _, tc := range []struct {
		in          []float64
		med, lo, hi float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 3, 1, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
	} {
		m, l, h := Summary(tc.in)
		if m != tc.med || l != tc.lo || h != tc.hi {
			t.Errorf("Summary(%v) = %v %v %v, want %v %v %v", tc.in, m, l, h, tc.med, tc.lo, tc.hi)
		}
	}
	if m, _, _ := Summary(nil); !math.IsNaN(m) {
		t.Errorf("Summary(nil) median = %v, want NaN", m)
	}
}

func TestCellsPickOneUnit(t *testing.T) {
	for _, tc := range []struct {
		f    Figure
		want [4]string
	}{
		{Figure{Kind: Duration, Samples: []float64{1.5, 0.9, 2}}, [4]string{"1.50 s", "0.90 s", "2.00 s", "3"}},
		{Figure{Kind: Duration, Samples: []float64{0.012}}, [4]string{"12.0 ms", "12.0 ms", "12.0 ms", "1"}},
		{Figure{Kind: Bytes, Samples: []float64{196608, 200704}}, [4]string{"194 KiB", "192 KiB", "196 KiB", "2"}},
		{Figure{Kind: Bytes, Samples: []float64{175 << 20}}, [4]string{"175 MiB", "175 MiB", "175 MiB", "1"}},
		{Figure{Kind: PerOp, Samples: []float64{327638}}, [4]string{"328 µs/op", "328 µs/op", "328 µs/op", "1"}},
		{Figure{Kind: Rate, Samples: []float64{45.25}}, [4]string{"45.2 MB/s", "45.2 MB/s", "45.2 MB/s", "1"}},
		{Figure{Kind: Duration}, [4]string{"–", "–", "–", "0"}},
	} {
		m, lo, hi, n := tc.f.Cells()
		if got := [4]string{m, lo, hi, n}; got != tc.want {
			t.Errorf("Cells(%v) = %q, want %q", tc.f.Samples, got, tc.want)
		}
	}
}

func TestTableSections(t *testing.T) {
	var r Report
	r.Section("build")
	r.Add("total", Duration, []float64{120}, "a | b")
	r.Add("boot", Duration, []float64{40}, "")
	r.Section("fleet")
	r.Add("up", Duration, []float64{60}, "")
	var b strings.Builder
	r.Table(&b)
	want := `| figure | median | min | max | runs | note |
| --- | ---: | ---: | ---: | ---: | --- |
| **build** | | | | | |
| total | 120 s | 120 s | 120 s | 1 | a \| b |
| boot | 40.0 s | 40.0 s | 40.0 s | 1 |  |
| **fleet** | | | | | |
| up | 60.0 s | 60.0 s | 60.0 s | 1 |  |
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestDocument(t *testing.T) {
	var r Report
	r.Add("x", Duration, []float64{1}, "")
	var b strings.Builder
	r.Document(&b, Machine{Date: time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC), CPU: "cpu", Cores: 2,
		MemoryBytes: 24 << 30, Accel: "tcg", QEMU: "QEMU emulator version 7.2", Duration: 30 * time.Minute}, "method\n")
	for _, want := range []string{"# kiln benchmarks", "2026-11-25 22:00 UTC", "| accelerator | tcg |", "| memory | 24.0 GiB |", "| x | 1.00 s |", "## How measured\n\nmethod\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("document lacks %q:\n%s", want, b.String())
		}
	}
}

func TestLineStamper(t *testing.T) {
	tick := time.Unix(0, 0)
	var seen []string
	s := &LineStamper{now: func() time.Time { tick = tick.Add(time.Second); return tick },
		OnLine: func(l Line) { seen = append(seen, l.Text) }}
	s.Write([]byte("==> [1/8] source done in 0.0s\n==> boot (tcg) hello-build, instance i-1, ssh"))
	s.Write([]byte(" on 127.0.0.1:40022\r\nrest"))
	lines := s.Lines()
	if len(lines) != 3 || lines[2].Text != "rest" {
		t.Fatalf("lines = %+v", lines)
	}
	if lines[0].At.Unix() != 1 || lines[1].At.Unix() != 2 {
		t.Errorf("a line is stamped when it is complete: %+v", lines)
	}
	if len(seen) != 2 {
		t.Errorf("OnLine saw %q", seen)
	}
	if p, ok := SSHPort(lines[1].Text); !ok || p != 40022 {
		t.Errorf("SSHPort = %d %v", p, ok)
	}
}

func TestParseStep(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Step
		ok   bool
	}{
		{"==> [3/8] cloud-init done in 14.2s", Step{3, 8, "cloud-init", true, 14200 * time.Millisecond}, true},
		{"==> [4/8] provision done in 1m58s", Step{4, 8, "provision", true, 118 * time.Second}, true},
		{"==> [2/8] boot failed in 5m0s", Step{2, 8, "boot", false, 5 * time.Minute}, true},
		{"==> provisioner 2 done in 44.3s", Step{}, false},
	} {
		got, ok := ParseStep(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseStep(%q) = %+v %v, want %+v %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
	at := time.Unix(5, 0)
	times := StepTimes([]Line{{at, "==> [2/8] boot done in 43.8s"}, {at, "noise"}})
	if !times["boot"].Equal(at) || len(times) != 1 {
		t.Errorf("StepTimes = %v", times)
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
pkg: github.com/kiln-dev/kiln/fleet
BenchmarkBalancerHandoff-2   	    3462	    327638 ns/op	    3211 B/op	      60 allocs/op
BenchmarkLoadHello 	     100	  1234567.5 ns/op
PASS
`
	got := ParseGoBench(out)
	if len(got) != 2 {
		t.Fatalf("got %+v", got)
	}
	if g := got[0]; g.Name != "BenchmarkBalancerHandoff" || g.N != 3462 || g.NsPerOp != 327638 || g.BytesPerOp != 3211 || g.AllocsPerOp != 60 {
		t.Errorf("got %+v", g)
	}
	if g := got[1]; g.Name != "BenchmarkLoadHello" || g.NsPerOp != 1234567.5 {
		t.Errorf("got %+v", g)
	}
}

func TestDataBytes(t *testing.T) {
	m := `[{"start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},
{"start": 65536, "length": 131072, "depth": 1, "present": true, "zero": false, "data": true},
{"start": 196608, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false},
{"start": 262144, "length": 1048576, "depth": 1, "present": false, "zero": true, "data": false}]`
	top, chain, err := DataBytes([]byte(m))
	if err != nil || top != 65536 || chain != 196608 {
		t.Errorf("DataBytes = %d %d %v", top, chain, err)
	}
}

func TestProcKB(t *testing.T) {
	st := "Name:\tkiln\nVmPeak:\t  900 kB\nVmRSS:\t   24576 kB\n"
	if v, ok := ProcKB(st, "VmRSS"); !ok || v != 24576*1024 {
		t.Errorf("ProcKB = %d %v", v, ok)
	}
	if _, ok := ProcKB(st, "VmSwap"); ok {
		t.Error("a missing field was found")
	}
}

func TestAccelerator(t *testing.T) {
	if a := Accelerator("  ok  qemu\naccelerator: tcg\n  KVM is not available\n"); a != "tcg" {
		t.Errorf("Accelerator = %q", a)
	}
}

func TestCountCells(t *testing.T) {
	m, lo, hi, n := Figure{Kind: Count, Samples: []float64{0, 2, 1}}.Cells()
	if m != "1" || lo != "0" || hi != "2" || n != "3" {
		t.Errorf("Cells = %q %q %q %q", m, lo, hi, n)
	}
}
