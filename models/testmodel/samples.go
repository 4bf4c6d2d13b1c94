package testmodel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// root is the folder of the module's go.mod, above the working directory.
func root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Sample returns the path of a sample audio file that `make deps` copies
// into build/samples (jfk.wav from the whisper.cpp Go module).
func Sample(name string) (string, error) {
	dir, err := root()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "build", "samples", name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("sample %s is missing: run `make deps` (%w)", name, err)
	}
	return p, nil
}

// RealFile returns the path of a real file in the shared test data beside
// the project (../shared/testdata/NAME from the project's root), or skips
// the test with the reason when it is not there: a clone of its own has
// none, CI has them. The files are read in place, never copied.
func RealFile(t testing.TB, name string) string {
	t.Helper()
	dir, err := root()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(filepath.Dir(dir), "shared", "testdata", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("real file %s is not here (../shared/testdata/%s from the project's root): %v", name, name, err)
	}
	return p
}
