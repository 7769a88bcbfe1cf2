package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/internal/benchtree"
)

// usage is what one process took: wall time, CPU time (user and system) and
// peak resident memory.
type usage struct {
	wall, cpu time.Duration
	maxRSS    int64 // bytes
}

// runProcess runs argv to completion and returns its usage; a non-zero exit
// is fatal unless ok says the code is expected.
func runProcess(b *testing.B, env []string, argv ...string) usage {
	b.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, tail(out.String(), 2000))
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return usage{wall: wall, cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), maxRSS: ru.Maxrss * 1024}
}

// runGitmesh runs this test binary as the gitmesh command, in a process of
// its own.
func runGitmesh(b *testing.B, args ...string) usage {
	b.Helper()
	env := []string{"GITMESH_TEST_RUN_MAIN=1"}
	if p := os.Getenv("GITMESH_BENCH_CPUPROFILE"); p != "" {
		env = append(env, "GITMESH_BENCH_CHILD_CPUPROFILE="+p)
	}
	return runProcess(b, env, append([]string{os.Args[0]}, args...)...)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// BenchmarkValidate runs gitmesh validate as a user does, a process of its
// own, on the benchmark tree (internal/benchtree) at 10,000 and 50,000
// resources: wall time, CPU time per resource, and the peak RSS of the
// process. Translation and checks for both flavours are included.
func BenchmarkValidate(b *testing.B) {
	for _, scale := range []int{1, 5} {
		shape := benchtree.Scaled(scale)
		b.Run(fmt.Sprintf("%dk", shape.Resources()/1000), func(b *testing.B) {
			dir := b.TempDir()
			if _, err := benchtree.Write(dir, shape); err != nil {
				b.Fatal(err)
			}
			var total usage
			for b.Loop() {
				u := runGitmesh(b, "validate", dir)
				total.wall += u.wall
				total.cpu += u.cpu
				total.maxRSS = max(total.maxRSS, u.maxRSS)
			}
			n := float64(b.N)
			b.ReportMetric(float64(total.wall.Milliseconds())/n, "wall-ms")
			b.ReportMetric(float64(total.cpu.Microseconds())/n/float64(shape.Resources()), "cpu-µs/resource")
			b.ReportMetric(float64(total.maxRSS)/(1<<20), "peak-RSS-MB")
		})
	}
}
