package llm

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes the models the tests generated.
func TestMain(m *testing.M) {
	code := m.Run()
	if tinyPath != "" {
		os.RemoveAll(filepath.Dir(tinyPath))
	}
	os.Exit(code)
}
