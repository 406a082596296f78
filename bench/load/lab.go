package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/server"
	"github.com/ddpm-go/ddpm/unet"
)

// labFixture is the diffusers UNet2DModel of the shared fixtures
// (1,112,801 parameters, 1 x 32 x 32), which -lab serves in this process.
var labFixture = filepath.Join("..", "shared", "fixtures", "diffusers-unet-small")

// labGenerator loads the fixture UNet (path relative to the repository
// root, where run.sh runs) on the CPU backend.
func labGenerator() (server.Generator, func(), error) {
	if _, err := os.Stat(labFixture); err != nil {
		return nil, nil, fmt.Errorf("-lab needs the shared fixtures at %s: %w", labFixture, err)
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{ConstWeights: true})
	if err != nil {
		return nil, nil, err
	}
	u, _, err := unet.Load(labFixture, cpu)
	if err != nil {
		return nil, nil, err
	}
	d, err := diffusion.New(diffusion.DefaultConfig())
	if err != nil {
		return nil, nil, err
	}
	g, err := server.NewDiffusionGenerator(u, d,
		server.ModelInfo{Name: "diffusers-unet-small", ImageSize: 32, Channels: 1, Device: cpu.Name()})
	if err != nil {
		return nil, nil, err
	}
	labSample = func(n, steps, reps int) (float64, error) {
		o := diffusion.Options{Sampler: diffusion.SamplerDDIM, Steps: steps, N: n, C: 1, H: 32, W: 32}
		m := u
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
