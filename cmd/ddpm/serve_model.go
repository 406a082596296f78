package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/server"
	"github.com/ddpm-go/ddpm/weights"
)

// loadServeModel loads the model named by o.model (the embedded default
// when empty) on o.device and wraps it as a server.Generator. The returned
// func releases the model.
func loadServeModel(ctx context.Context, o serveOptions, log *slog.Logger) (server.Generator, func(), error) {
	var src *weights.Source
	var err error
	name := "default"
	if o.model == "" {
		src, err = weights.OpenDefault()
	} else {
		src, err = weights.Open(o.model)
		name = modelName(o.model)
	}
	if err != nil {
		return nil, nil, err
	}
	d, err := diffusionFor(src)
	if err != nil {
		return nil, nil, err
	}
	info, err := serveInfo(src, name)
	if err != nil {
		return nil, nil, err
	}
	model, device, release, err := newServeUNet(ctx, src, o.device)
	if err != nil {
		return nil, nil, err
	}
	info.Device = device
	gen, err := server.NewDiffusionGenerator(model, d, info)
	if err != nil {
		release()
		return nil, nil, err
	}
	log.Info("model loaded", "model", info.Name, "path", src.Path, "format", src.Format.String(),
		"params", src.NumParams(), "size", info.ImageSize, "classes", info.NumClasses, "T", d.T(), "device", device)
	return gen, release, nil
}

// newServeUNet builds the UNet of src on device ("auto", "cpu" or "cuda")
// and reports which device runs it.
func newServeUNet(ctx context.Context, src *weights.Source, device string) (diffusion.Model, string, func(), error) {
	net, _, name, release, err := newUNet(src, device, nil)
	if err != nil {
		return nil, "", nil, err
	}
	return net, name, release, nil
}

// modelName is the model id /v1/models shows for a path: the file or
// folder name without its extension.
func modelName(path string) string {
	base := filepath.Base(filepath.Clean(path))
	if ext := filepath.Ext(base); ext != "" && ext != base {
		base = strings.TrimSuffix(base, ext)
	}
	if base == "" || base == "." || base == string(filepath.Separator) {
		return "default"
	}
	return base
}

// diffusionFor builds the diffusion process of src: its ddpm diffusion
// config, else its diffusers scheduler config, else Ho et al. 2020's
// defaults (linear betas, T = 1000, epsilon, fixed small variance).
func diffusionFor(src *weights.Source) (*diffusion.Diffusion, error) {
	cfg := diffusion.DefaultConfig()
	switch {
	case len(src.DiffusionConfig) > 0:
		if err := json.Unmarshal(src.DiffusionConfig, &cfg); err != nil {
			return nil, fmt.Errorf("model %s: diffusion config: %w", src.Path, err)
		}
	case len(src.SchedulerConfig) > 0:
		c, _, err := diffusion.FromDiffusers(src.SchedulerConfig)
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", src.Path, err)
		}
		cfg = c
	}
	d, err := diffusion.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", src.Path, err)
	}
	return d, nil
}

// unetConfigKeys are the diffusers UNet2DModel config keys the server needs.
type unetConfigKeys struct {
	SampleSize     json.RawMessage `json:"sample_size"` // an int or [h, w]
	InChannels     int             `json:"in_channels"`
	NumClassEmbeds *int            `json:"num_class_embeds"`
	NullClass      *int            `json:"ddpm_null_class"`
}

// serveInfo describes src for the server: square image size, channels and
// classes from the UNet config, class names from the model file.
func serveInfo(src *weights.Source, name string) (server.ModelInfo, error) {
	var k unetConfigKeys
	if err := json.Unmarshal(src.UNetConfig, &k); err != nil {
		return server.ModelInfo{}, fmt.Errorf("model %s: UNet config: %w", src.Path, err)
	}
	size := 0
	if err := json.Unmarshal(k.SampleSize, &size); err != nil {
		var hw []int
		if err := json.Unmarshal(k.SampleSize, &hw); err != nil || len(hw) != 2 || hw[0] != hw[1] {
			return server.ModelInfo{}, fmt.Errorf("model %s: sample_size %s: the server needs square images (an int or [n, n])", src.Path, k.SampleSize)
		}
		size = hw[0]
	}
	info := server.ModelInfo{Name: name, ImageSize: size, Channels: k.InChannels, ClassNames: src.ClassNames}
	if k.NumClassEmbeds != nil {
		info.NumClasses = *k.NumClassEmbeds
		if k.NullClass != nil {
			info.NumClasses-- // the null class of classifier-free guidance is no class
		}
	}
	if info.ClassNames != nil && len(info.ClassNames) != info.NumClasses {
		info.ClassNames = nil // names that do not match the embedding are not trusted
	}
	return info, nil
}
