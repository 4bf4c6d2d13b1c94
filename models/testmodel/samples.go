package testmodel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Sample returns the path of a speech sample that `make deps` staged under
// build/samples (jfk.wav comes from whisper.cpp's Go module), searching
// from the working directory up to the module root.
func Sample(name string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "build", "samples", name)
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("sample %s is missing: run `make deps` (%w)", name, err)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
