// Package gputest finds the GPU owl's GPU tests run on. `make test-gpu`
// runs them on Mesa's software Vulkan GPU (lavapipe) with OWL_TEST_GPU
// set, where a test that finds no GPU fails; elsewhere such a test skips,
// saying why.
package gputest

import (
	"math"
	"os"
	"testing"

	"github.com/owlengine/owl/bindings/llama"
)

// Require returns the first GPU, or skips (fails under OWL_TEST_GPU) when
// there is none.
func Require(t testing.TB) llama.Device {
	t.Helper()
	gpus := llama.GPUs()
	if len(gpus) > 0 {
		return gpus[0]
	}
	libs := llama.Libraries()
	why := "no GPU backend library on OWL_LIBRARY_PATH (make test-gpu builds the Vulkan backend and runs these tests on lavapipe)"
	if len(libs) > 0 {
		why = "the GPU backend " + libs[0].Path + " found no device (for lavapipe: GGML_VK_VISIBLE_DEVICES=0)"
	}
	if os.Getenv("OWL_TEST_GPU") != "" {
		t.Fatal("OWL_TEST_GPU is set but there is no GPU: " + why)
	}
	t.Skip(why)
	return llama.Device{}
}

// NMSE is the normalized mean squared error of got against want:
// Σ(got−want)² / Σwant². It is ggml's measure in its backend tests.
func NMSE(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if den == 0 {
		return num
	}
	return num / den
}

// MaxAbs is the largest |got−want|.
func MaxAbs(got, want []float32) float64 {
	m := 0.0
	for i := range want {
		m = math.Max(m, math.Abs(float64(got[i])-float64(want[i])))
	}
	return m
}
