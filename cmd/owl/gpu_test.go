package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/owlengine/owl/internal/gputest"
)

// owlEnv runs owl with extra environment variables.
func owlEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(owlBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		if !ee.Exited() {
			t.Fatalf("owl %v died: %v\nstderr: %s", args, err, errb.String())
		}
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// TestGPUCommands: owl version and owl devices list the GPU; a generation
// offloaded (the default) prints what -ngl 0 prints; a device that refuses
// the model's buffers (its memory "full") falls back to the CPU with a
// warning and the same output; without a Vulkan driver a GPU build says so
// in one line and runs on the CPU.
func TestGPUCommands(t *testing.T) {
	dev := gputest.Require(t)
	for _, cmd := range []string{"version", "devices"} {
		r := owl(t, "", cmd)
		if r.code != 0 || !strings.Contains(r.stdout, dev.Name) || !strings.Contains(r.stdout, dev.Description) || !strings.Contains(r.stdout, "free of") {
			t.Fatalf("owl %s does not list %s (%s): %+v", cmd, dev.Name, dev.Description, r)
		}
	}
	gen := []string{"generate", "-m", tiny, "-p", "Once upon a time", "-n", "12", "--temperature", "0", "-t", "2"}
	cpu := owl(t, "", append(gen, "-ngl", "0")...)
	if cpu.code != 0 || cpu.stdout == "" {
		t.Fatalf("generate -ngl 0: %+v", cpu)
	}
	for _, args := range [][]string{gen, append(gen, "--device", dev.Name), append(gen, "--gpu-layers=99")} {
		if r := owl(t, "", args...); r.code != 0 || r.stdout != cpu.stdout || r.stderr != "" {
			t.Fatalf("owl %v: %+v; on the CPU %q", args[len(gen)-1:], r, cpu.stdout)
		}
	}
	if r := owl(t, "", append(gen, "--device", "Vulkan9")...); r.code != 2 || !strings.Contains(r.stderr, `GPU "Vulkan9": no such device`) {
		t.Fatalf("--device Vulkan9: %+v", r)
	}

	// ggml-vulkan refuses buffers above this size: loading fails on the GPU.
	full := owlEnv(t, []string{"GGML_VK_FORCE_MAX_BUFFER_SIZE=4096"}, gen...)
	if full.code != 0 || full.stdout != cpu.stdout || !strings.Contains(full.stderr, "loading on the GPU failed; loading on the CPU instead") {
		t.Fatalf("a device without room: %+v", full)
	}

	noDriver := owlEnv(t, []string{"VK_ICD_FILENAMES=/nonexistent/icd.json", "VK_DRIVER_FILES=/nonexistent/icd.json"}, gen...)
	lines := strings.Split(strings.TrimSpace(noDriver.stderr), "\n")
	if noDriver.code != 0 || noDriver.stdout != cpu.stdout || len(lines) != 1 || !strings.Contains(lines[0], "no usable GPU") {
		t.Fatalf("without a Vulkan driver: %+v", noDriver)
	}
	if r := owlEnv(t, []string{"VK_ICD_FILENAMES=/nonexistent/icd.json", "VK_DRIVER_FILES=/nonexistent/icd.json"}, "version"); !strings.Contains(r.stdout, "not loaded") || !strings.Contains(r.stdout, "models run on the CPU") {
		t.Fatalf("owl version without a Vulkan driver: %+v", r)
	}
}
