package unet

import (
	"context"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
)

// benchModel loads the diffusers fixture model (skips without it).
func benchModel(b *testing.B) (*Model, diffusion.Batch, []int) {
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
	ts := make([]int, 16)
	for i := range ts {
		ts[i] = 60 * i
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

// BenchmarkStep is the fixture model's forward+backward at batch 16.
func BenchmarkStep(b *testing.B) {
	m, x, ts := benchModel(b)
	ctx := context.Background()
	loss := func(out diffusion.Batch, dout []float32) (float64, error) {
		for i, v := range out.Data {
			dout[i] = v / float32(len(out.Data))
		}
		return 0, nil
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Step(ctx, x, ts, nil, uint64(i), loss); err != nil {
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
	ts := []int{1, 300, 600, 999}
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
