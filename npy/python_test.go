package npy

import (
	"context"
	"os/exec"
	"time"
)

// runPython runs a short Python snippet with args and returns its stdout.
func runPython(py, code string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, append([]string{"-c", code}, args...)...).Output()
	return string(out), err
}
