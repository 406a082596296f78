package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/server"
	"github.com/ddpm-go/ddpm/unet"
)

// generator returns the Generator that ddpm serve runs for o, for the
// direct call, and a function releasing it.
func generator(o options) (server.Generator, func(), error) {
	if o.lab {
		return labGenerator()
	}
	if o.fake {
		f := server.NewFakeGenerator(32, 3, nil)
		f.StepDelay, f.ImageDelay = o.fakeStep, o.fakeImage
		return f, func() {}, nil
	}
	if o.model == "" {
		return nil, nil, errors.New("the direct call needs -model PATH (or -fake, -lab)")
	}
	// As ddpm serve --device cpu loads it (cmd/ddpm/model.go).
	cpu, err := kernels.NewCPU(kernels.CPUOptions{ConstWeights: true})
	if err != nil {
		return nil, nil, err
	}
	m, src, err := unet.Load(o.model, cpu)
	if err != nil {
		return nil, nil, err
	}
	cfg := diffusion.DefaultConfig()
	switch {
	case len(src.DiffusionConfig) > 0:
		if err := json.Unmarshal(src.DiffusionConfig, &cfg); err != nil {
			return nil, nil, fmt.Errorf("diffusion config: %w", err)
		}
	case len(src.SchedulerConfig) > 0:
		if cfg, _, err = diffusion.FromDiffusers(src.SchedulerConfig); err != nil {
			return nil, nil, err
		}
	}
	d, err := diffusion.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	uc, err := unet.ParseConfig(src.UNetConfig)
	if err != nil {
		return nil, nil, err
	}
	classes := 0
	if uc.NumClassEmbeds != nil {
		classes = *uc.NumClassEmbeds
		if uc.NullClass != nil {
			classes--
		}
	}
	g, err := server.NewDiffusionGenerator(m, d, server.ModelInfo{Name: filepath.Base(o.model), ImageSize: uc.SampleSize,
		Channels: uc.InChannels, NumClasses: classes, Device: cpu.Name()})
	if err != nil {
		return nil, nil, err
	}
	return g, func() {}, nil
}
