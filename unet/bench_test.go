package unet

import (
	"context"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/nn"
)

// benchModel loads the diffusers fixture model (skips without it).
func benchModel(b *testing.B) (*Model, diffusion.Batch, []float64) {
	dir := fixtureDir(b)
	m, _, err := Load(dir, newCPU(b))
	if err != nil {
		b.Fatal(err)
	}
	c := m.Config()
	x := diffusion.NewBatch(16, c.InChannels, c.SampleSize, c.SampleSize)
	for i := range x.Data {
		x.Data[i] = float32(i%17)/8 - 1
	}
	ts := make([]float64, 16)
	for i := range ts {
		ts[i] = float64(60 * i)
	}
	return m, x, ts
}

// BenchmarkPredict is the fixture model's forward pass at batch 16.
func BenchmarkPredict(b *testing.B) {
	m, x, ts := benchModel(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Predict(ctx, x, ts, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTrainStep is the fixture model's training step at batch 16:
// forward, the L_simple loss, backward (no optimiser).
func BenchmarkTrainStep(b *testing.B) {
	m, x, ts := benchModel(b)
	ctx := context.Background()
	in, err := m.Inputs(x, ts, nil)
	if err != nil {
		b.Fatal(err)
	}
	coefs := make([]diffusion.LossCoefs, x.N)
	for i := range coefs {
		coefs[i] = diffusion.LossCoefs{TargetNoise: 1, MSE: 1}
	}
	ti := nn.TrainInputs{Net: in, Loss: kernels.DiffusionLossDims{N: x.N, D: len(x.Data) / x.N},
		X0: make([]float32, len(x.Data)), Noise: x.Data, Coef: nn.LossCoefRows(coefs, nil)}
	e := m.Engine()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ti.State.Seed = uint64(i)
		if err := e.TrainStep(ctx, Key(x), ti); err != nil {
			b.Fatal(err)
		}
		if err := e.Ops().Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCIFAR10Predict is the ddpm-cifar10 preset's forward at batch 4.
func BenchmarkCIFAR10Predict(b *testing.B) {
	cfg, err := Preset("ddpm-cifar10")
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(cfg, newCPU(b), 1)
	if err != nil {
		b.Fatal(err)
	}
	x := diffusion.NewBatch(4, 3, 32, 32)
	ts := []float64{1, 300, 600, 999}
	ctx := context.Background()
	if _, err := m.Predict(ctx, x, ts, nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Predict(ctx, x, ts, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCIFAR10BF16 is the ddpm-cifar10 preset's bf16 forward at
// batch 4 (random weights, seed 5), reporting its relative L2 error
// against the fp32 forward of the same weights (relL2; bench/RESULTS.md:
// 1.14e-2 with the Winograd kernels):
//
//	go test -run '^$' -bench CIFAR10BF16 -benchtime 1x ./unet
func BenchmarkCIFAR10BF16(b *testing.B) {
	if err := kernels.BF16Supported(); err != nil {
		b.Skipf("no bf16: %v", err)
	}
	cfg, err := Preset("ddpm-cifar10")
	if err != nil {
		b.Fatal(err)
	}
	cfg.Dropout = 0
	x, ts := sinBatch(4, 32), []float64{1, 300, 600, 999}
	fp32, bf16, m := fp32AndBF16(b, cfg, 5, x, ts)
	defer m.Close()
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Predict(ctx, x, ts, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(relL2(bf16, fp32), "relL2")
}
