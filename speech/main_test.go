package speech

import (
	"os"
	"testing"
)

// TestMain removes the models the tests generated and their converted
// copies.
func TestMain(m *testing.M) {
	code := m.Run()
	if modelDir != "" {
		os.RemoveAll(modelDir)
	}
	os.Exit(code)
}
