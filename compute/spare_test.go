package compute

import (
	"os/exec"
	"runtime"
	"testing"
	"time"
)

// Spare stays within the machine's CPUs, and falls when other programs
// keep every core busy.
func TestSpare(t *testing.T) {
	if _, _, ok := cpuTimes(); !ok {
		t.Skip("no /proc/stat here: Spare reports every CPU free")
	}
	n := float64(runtime.NumCPU())
	if s := Spare(); s < 0 || s > n {
		t.Fatalf("Spare() = %v of %v CPUs", s, n)
	}
	for range runtime.NumCPU() {
		hog := exec.Command("sh", "-c", "while :; do :; done")
		if err := hog.Start(); err != nil {
			t.Skip("cannot start a busy program:", err)
		}
		defer func() { hog.Process.Kill(); hog.Wait() }()
	}
	least := n
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		s := Spare()
		if s < 0 || s > n {
			t.Fatalf("Spare() = %v of %v CPUs", s, n)
		}
		least = min(least, s)
	}
	t.Logf("with %d busy programs: %.2f of %v CPUs spare", runtime.NumCPU(), least, n)
	if least > n-0.5 {
		t.Fatalf("with every core busy, Spare() stayed at %.2f of %v", least, n)
	}
}
