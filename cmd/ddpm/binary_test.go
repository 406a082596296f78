package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The ddpm binary the process tests run (serve, cluster, mpirun), built
// once per test run: each `go build` links a 50 MB binary (about 6 s).
var testBinary struct {
	once sync.Once
	dir  string
	path string
	out  []byte
	err  error
}

// buildDDPM returns the path of the ddpm binary built from this package.
func buildDDPM(t *testing.T) string {
	t.Helper()
	b := &testBinary
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "ddpm-test-bin-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "ddpm")
		b.out, b.err = exec.Command("go", "build", "-o", b.path, ".").CombinedOutput()
	})
	if b.err != nil {
		t.Fatalf("go build: %v\n%s", b.err, b.out)
	}
	return b.path
}

// TestMain removes the shared binary after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if testBinary.dir != "" {
		os.RemoveAll(testBinary.dir)
	}
	os.Exit(code)
}
