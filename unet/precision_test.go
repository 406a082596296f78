package unet

import (
	"context"
	"math"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
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

// TestWideInference: a UNet wide enough for the bf16 Winograd kernels
// (128 channels at 16x16 and 8x8, like the DDPM CIFAR-10 UNet's first
// levels; random weights), bf16 against fp32 with constant weights: one
// forward within 2e-2 relative L2 (measured 9.5e-3; 8.0e-3 with oneDNN's
// direct bf16 kernels instead of the Winograd ones).
func TestWideInference(t *testing.T) {
	if err := kernels.BF16Supported(); err != nil {
		t.Skipf("no bf16: %v", err)
	}
	cfg, err := Preset("ddpm-cifar10")
	if err != nil {
		t.Fatal(err)
	}
	cfg.SampleSize, cfg.LayersPerBlock, cfg.Dropout = 16, 1, 0
	cfg.BlockOutChannels = []int{128, 128}
	cfg.DownBlockTypes = []string{"DownBlock2D", "AttnDownBlock2D"}
	cfg.UpBlockTypes = []string{"AttnUpBlock2D", "UpBlock2D"}
	fp32, bf16, m := fp32AndBF16(t, cfg, 3, sinBatch(2, 16), []float64{10, 700})
	m.Close()
	e := relL2(bf16, fp32)
	t.Logf("bf16 against fp32: relative L2 %.3g", e)
	if e > 2e-2 {
		t.Fatalf("bf16 against fp32: relative L2 %.3g > 2e-2", e)
	}
}

// sinBatch is n RGB images of size x size holding sin(0.37 i): a smooth,
// reproducible input.
func sinBatch(n, size int) diffusion.Batch {
	x := diffusion.NewBatch(n, 3, size, size)
	for i := range x.Data {
		x.Data[i] = float32(math.Sin(float64(i) * 0.37))
	}
	return x
}

// fp32AndBF16 builds cfg with seed's random weights on an fp32 and a bf16
// CPU (both with constant weights) and returns their forwards of x at ts,
// and the bf16 model, still open (the caller closes it). It skips where
// either CPU cannot be made.
func fp32AndBF16(tb testing.TB, cfg Config, seed uint64, x diffusion.Batch, ts []float64) (fp32, bf16 []float32, m *Model) {
	tb.Helper()
	var outs [2][]float32
	for i, opts := range []kernels.CPUOptions{{ConstWeights: true}, {ConstWeights: true, BF16: true}} {
		c, err := kernels.NewCPU(opts)
		if err != nil {
			tb.Skipf("%+v: %v", opts, err)
		}
		if m != nil {
			m.Close()
		}
		if m, err = New(cfg, c, seed); err != nil {
			tb.Fatal(err)
		}
		out, err := m.Predict(context.Background(), x, ts, nil)
		if err != nil {
			tb.Fatal(err)
		}
		outs[i] = out.Data
	}
	return outs[0], outs[1], m
}
