package unet

import (
	"context"
	"testing"

	"github.com/ddpm-go/ddpm/kernels"
)

// TestFixtureInference runs diffusers' small UNet on the CPU's inference
// paths against diffusers' output: constant weights (Winograd kernels
// where faster) within 1e-4 relative L2 like the training path, and bf16
// convolutions (where the CPU has them) within 1e-2.
func TestFixtureInference(t *testing.T) {
	dir := fixtureDir(t)
	x, ts, want := fixtureCase(t, dir)
	for _, tc := range []struct {
		name string
		opts kernels.CPUOptions
		tol  float64
	}{
		{"fp32", kernels.CPUOptions{ConstWeights: true}, 1e-4},
		{"bf16", kernels.CPUOptions{ConstWeights: true, BF16: true}, 1e-2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.BF16 {
				if err := kernels.BF16Supported(); err != nil {
					t.Skipf("no bf16: %v", err)
				}
			}
			c, err := kernels.NewCPU(tc.opts)
			if err != nil {
				t.Skipf("%s: %v", tc.name, err)
			}
			m, _, err := Load(dir, c)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for rep := 0; rep < 2; rep++ { // the second pass on cached weights
				out, err := m.Predict(context.Background(), x, ts, nil)
				if err != nil {
					t.Fatal(err)
				}
				e := relL2(out.Data, want)
				t.Logf("%s on %s, pass %d: relative L2 error against diffusers %.3g", tc.name, c.Name(), rep, e)
				if e > tc.tol {
					t.Fatalf("relative L2 error %.3g > %.3g", e, tc.tol)
				}
			}
		})
	}
}
