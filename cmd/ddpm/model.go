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

// loaded is a model ready to sample: the UNet (on the CPU or a GPU), its
// config, its diffusion process and where it came from.
type loaded struct {
	net     diffusion.Model
	cfg     unet.Config
	d       *diffusion.Diffusion
	src     *weights.Source
	device  string
	release func()
}

// openSource opens path, or the embedded default model when path is "".
func openSource(path string) (*weights.Source, error) {
	if path == "" {
		return weights.OpenDefault()
	}
	return weights.Open(path)
}

// loadModel loads the model at path ("" for the embedded default) for
// inference on device (auto, cpu or cuda[:N]), logging which device runs
// to log. Call release when done.
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
	logf := func(format string, args ...any) {
		if log != nil {
			fmt.Fprintf(log, format+"\n", args...)
		}
	}
	net, cfg, name, release, err := newUNet(src, device, logf)
	if err != nil {
		return nil, err
	}
	return &loaded{net: net, cfg: cfg, d: d, src: src, device: name, release: release}, nil
}

// newUNet builds src's UNet for inference on device (auto, cpu or
// cuda[:N], resolved by cuda.Select, which logs the choice through logf):
// on the CPU the Gorgonia graph runs on kernels.CPU; on a GPU the same
// graph runs through gexec on the cuda backend (unet.DeviceModel).
func newUNet(src *weights.Source, device string, logf func(string, ...any)) (diffusion.Model, unet.Config, string, func(), error) {
	be, err := cuda.Select(device, cuda.SelectOptions{CPU: kernels.CPUOptions{ConstWeights: true}, Logf: logf})
	if err != nil {
		return nil, unet.Config{}, "", nil, err
	}
	cpu := be.CPU
	if cpu == nil { // the graph is built (and its shapes checked) on the CPU
		if cpu, err = kernels.NewCPU(kernels.CPUOptions{}); err != nil {
			be.GPU.Close()
			return nil, unet.Config{}, "", nil, err
		}
	}
	net, err := unet.FromSource(src, cpu)
	if err != nil {
		if be.GPU != nil {
			be.GPU.Close()
		}
		return nil, unet.Config{}, "", nil, fmt.Errorf("model %s: %w", src.Path, err)
	}
	if be.GPU == nil {
		return net, net.Config(), be.Name(), func() {}, nil
	}
	dm, err := unet.NewDeviceModel[cuda.Ptr](net, be.GPU)
	if err != nil {
		be.GPU.Close()
		return nil, unet.Config{}, "", nil, err
	}
	return dm, net.Config(), be.Name(), func() { dm.Close(); be.GPU.Close() }, nil
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
