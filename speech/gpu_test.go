package speech

import (
	"testing"

	"github.com/owlengine/owl/internal/gputest"
	"github.com/owlengine/owl/models/testmodel"
)

// TestGPUOracle: the Whisper encoder and decoder with their weights on the
// GPU agree with the float64 oracle, within a tolerance that still catches
// every mistake the oracle can be given.
func TestGPUOracle(t *testing.T) {
	dev := gputest.Require(t)
	// The Vulkan kernels take f16 operands where the device has f16
	// arithmetic (lavapipe has) and sum in another order: about 3e-4
	// relative error on the micro model, where the CPU's f32 path stays
	// near 2e-7. The smallest mistake the oracle can be given (a missing
	// query bias) moves the encoder 8e-3 away, so 1e-3 with a margin of 5
	// still tells each mistake from rounding.
	checkOracle(t, testmodel.WhisperMicro(testmodel.VocabEnglish, 0), dev.Name, 1e-3, 5, true)
}
