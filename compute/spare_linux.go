package compute

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// cpuTimes reads, in seconds, the CPU time every program has run (user,
// niced, system and interrupt time), and this process's own, from
// /proc/stat and getrusage.
func cpuTimes() (busy, own float64, ok bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return 0, 0, false
	}
	fields := strings.Fields(line)
	// cpu user nice system idle iowait irq softirq steal …
	if len(fields) < 8 || fields[0] != "cpu" {
		return 0, 0, false
	}
	var ticks float64
	for _, i := range []int{1, 2, 3, 6, 7} { // user, nice, system, irq, softirq
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return 0, 0, false
		}
		ticks += v
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, 0, false
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	// /proc/stat counts in USER_HZ, which Linux fixes at 100.
	return ticks / 100, tv(ru.Utime) + tv(ru.Stime), true
}
