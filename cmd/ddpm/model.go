package main

import (
	"fmt"
	"io"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

// loaded is a model ready to sample: the UNet, its diffusion process and
// where it came from.
type loaded struct {
	net    *unet.Model
	d      *diffusion.Diffusion
	src    *weights.Source
	device string
}

// openSource opens path, or the embedded default model when path is "".
func openSource(path string) (*weights.Source, error) {
	if path == "" {
		return weights.OpenDefault()
	}
	return weights.Open(path)
}

// loadModel loads the model at path ("" for the embedded default) for
// inference on device, logging which device runs to log.
func loadModel(path, device string, log io.Writer) (*loaded, error) {
	if _, err := cuda.ParseDevice(device); err != nil {
		return nil, usageError{err.Error()}
	}
	src, err := openSource(path)
	if err != nil {
		return nil, err
	}
	d, err := diffusionFor(src)
	if err != nil {
		return nil, err
	}
	net, name, err := newUNet(src, device)
	if err != nil {
		return nil, err
	}
	if log != nil {
		fmt.Fprintf(log, "device: %s (--device %s)\n", name, device)
	}
	return &loaded{net: net, d: d, src: src, device: name}, nil
}

// newUNet builds src's UNet for inference on device (auto, cpu or
// cuda[:N]) and names the device that runs it. The UNet graph runs on the
// CPU in this build: "auto" uses the CPU, and "cuda" is a clear error.
func newUNet(src *weights.Source, device string) (*unet.Model, string, error) {
	spec, err := cuda.ParseDevice(device)
	if err != nil {
		return nil, "", err
	}
	if spec.Kind == "cuda" {
		return nil, "", fmt.Errorf("--device %s: the UNet graph does not run on the GPU executor in this build yet; use --device cpu or auto", device)
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{ConstWeights: true})
	if err != nil {
		return nil, "", err
	}
	net, err := unet.FromSource(src, cpu)
	if err != nil {
		return nil, "", fmt.Errorf("model %s: %w", src.Path, err)
	}
	return net, cpu.Name(), nil
}

// classCount is the number of real classes of a model (its class
// embeddings less the null class used for guidance), 0 if unconditional.
func classCount(c unet.Config) int {
	if c.NumClassEmbeds == nil {
		return 0
	}
	if c.NullClass != nil {
		return *c.NumClassEmbeds - 1
	}
	return *c.NumClassEmbeds
}
