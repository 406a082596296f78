package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/ddpm-go/ddpm/cuda/dev"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/server"
	"github.com/ddpm-go/ddpm/weights"
)

// labFixture is the diffusers UNet2DModel of the shared fixtures
// (1,112,801 parameters, 1 x 32 x 32), which -lab serves.
var labFixture = filepath.Join("..", "shared", "fixtures", "diffusers-unet-small")

// labModel is a diffusion.Model over the kernel lab's UNet (cuda/dev, a
// UNet2DModel written on kernels.Ops and checked against diffusers to
// 1e-6) on the CPU backend: a real network's cost while the Gorgonia UNet
// is not ready to be served.
type labModel struct {
	cpu *kernels.CPU
	u   *dev.UNet[[]float32]
}

// Predict implements diffusion.Model: eps for x_t at timesteps t.
func (m labModel) Predict(ctx context.Context, x diffusion.Batch, t []int, y []int) (diffusion.Batch, error) {
	if err := ctx.Err(); err != nil {
		return diffusion.Batch{}, err
	}
	out := diffusion.NewBatch(x.N, x.C, x.H, x.W)
	m.u.Forward(out.Data, x.Data, t, x.H, x.W)
	return out, m.cpu.Sync()
}

// labGenerator loads the fixture UNet (path relative to the repository
// root, where run.sh runs) on the CPU backend.
func labGenerator() (server.Generator, func(), error) {
	if _, err := os.Stat(labFixture); err != nil {
		return nil, nil, fmt.Errorf("-lab needs the shared fixtures at %s: %w", labFixture, err)
	}
	src, err := weights.Open(labFixture)
	if err != nil {
		return nil, nil, err
	}
	tensors := map[string][]float32{}
	for name, t := range src.Tensors {
		tensors[name] = t.Data
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		return nil, nil, err
	}
	u, err := dev.NewUNet[[]float32](cpu, dev.UNetConfig{InChannels: 1, Channels: []int{32, 64, 64},
		Attention: []bool{false, true, false}, Layers: 1, Groups: 8, Eps: 1e-6}, 1)
	if err != nil {
		return nil, nil, err
	}
	if err := u.Load(tensors); err != nil {
		return nil, nil, err
	}
	d, err := diffusion.New(diffusion.DefaultConfig())
	if err != nil {
		return nil, nil, err
	}
	g, err := server.NewDiffusionGenerator(labModel{cpu: cpu, u: u}, d,
		server.ModelInfo{Name: "diffusers-unet-small (lab UNet)", ImageSize: 32, Channels: 1, Device: cpu.Name()})
	if err != nil {
		return nil, nil, err
	}
	labSample = func(n, steps, reps int) (float64, error) {
		o := diffusion.Options{Sampler: diffusion.SamplerDDIM, Steps: steps, N: n, C: 1, H: 32, W: 32}
		m := labModel{cpu: cpu, u: u}
		if _, err := d.Sample(context.Background(), m, o); err != nil {
			return 0, err
		}
		start := time.Now()
		for r := range reps {
			o.Seed = uint64(r)
			if _, err := d.Sample(context.Background(), m, o); err != nil {
				return 0, err
			}
		}
		return float64(n*reps) / time.Since(start).Seconds(), nil
	}
	return g, u.Close, nil
}

// labSample, set by labGenerator, times one diffusion.Sample of n images
// (one seed for the batch, no per-image runs): the floor under the
// generator's per-image batching.
var labSample func(n, steps, reps int) (float64, error)

// startInProcess serves gen with the server package on a loopback port in
// this process (the code ddpm serve runs) and returns its base URL and a
// stop function that drains it as SIGTERM would.
func startInProcess(gen server.Generator, batch int) (string, func() error, error) {
	srv, err := server.New(gen, server.Options{MaxBatch: batch, QueueSize: 1024, Timeout: 10 * time.Minute, MaxSteps: 1000})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	return "http://" + ln.Addr().String(), func() error { cancel(); return <-done }, nil
}
