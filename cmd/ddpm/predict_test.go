package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/npy"
)

// TestPredictFixture runs `ddpm predict` on diffusers' small UNet and
// compares with diffusers' output (relative L2 error < 1e-4).
func TestPredictFixture(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "diffusers-unet-small")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("diffusers fixture not found at %s (it lives in the project's shared/ folder): %v", dir, err)
	}
	ta, err := npy.ReadFile(filepath.Join(dir, "timesteps.npy"))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := ta.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	var tsArg []string
	for _, v := range ts {
		tsArg = append(tsArg, strconv.FormatInt(v, 10))
	}
	out := filepath.Join(t.TempDir(), "out.npy")
	var so, se bytes.Buffer
	err = run(context.Background(), []string{"predict", "--model", dir, "--input", filepath.Join(dir, "x.npy"),
		"--timesteps", strings.Join(tsArg, ","), "--output", out}, &so, &se)
	if err != nil {
		t.Fatalf("predict: %v\n%s", err, se.String())
	}
	if e := relL2NPY(t, out, filepath.Join(dir, "out.npy")); e > 1e-4 {
		t.Fatalf("relative L2 error against diffusers = %.3g", e)
	}
}

// TestPredictErrors checks that bad command lines are usage errors that
// name the flag.
func TestPredictErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"predict", "--input", "x.npy", "--timesteps", "1", "--output", "o.npy"}, "--model is required"},
		{[]string{"predict", "--model", "m", "--input", "x.npy", "--timesteps", "1", "--output", "o.npy", "--device", "tpu"}, "--device"},
		{[]string{"predict", "--model", "m", "--input", filepath.Join(t.TempDir(), "none.npy"), "--timesteps", "1", "--output", "o.npy"}, "--input"},
	} {
		var so, se bytes.Buffer
		err := run(context.Background(), tc.args, &so, &se)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
	if _, err := parseInts("--timesteps", "1,x", 2); err == nil {
		t.Error("parseInts accepted x")
	}
	if v, err := parseInts("--timesteps", "7", 3); err != nil || len(v) != 3 || v[2] != 7 {
		t.Errorf("parseInts(7, 3) = %v, %v", v, err)
	}
	if _, err := parseInts("--class", "1,2", 3); err == nil {
		t.Error("parseInts accepted 2 values for 3 samples")
	}
}
