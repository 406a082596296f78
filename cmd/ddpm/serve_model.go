package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/imagenet"
	"github.com/ddpm-go/ddpm/pipeline"
	"github.com/ddpm-go/ddpm/server"
	"github.com/ddpm-go/ddpm/weights"
)

// loadServeModel loads the model named by o.model (the embedded default
// when empty) on o.device and wraps it as a server.Generator. The returned
// func releases the model.
func loadServeModel(ctx context.Context, o serveOptions, log *slog.Logger) (server.Generator, func(), error) {
	name := "default"
	if o.model != "" {
		name = modelName(o.model)
	}
	p, err := pipeline.Open(ctx, o.model, pipeline.Options{Device: o.device, GPU: cuda.Options{Precision: o.prec},
		Logf: func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) }})
	if err != nil {
		return nil, nil, err
	}
	info, err := serveInfo(p.Source, name)
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	info.Device = p.Device
	text := info.Text // set by SetText below
	info.Text = false
	if text && o.classifier != "" {
		p.Close()
		return nil, nil, fmt.Errorf("serve: --classifier: the model is GLIDE's text-to-image model: guide it with guidance_scale (classifier guidance is for class-conditional models)")
	}
	gen, err := server.NewDiffusionGenerator(p.Model, p.Diffusion, info)
	if err == nil && text {
		err = gen.SetText(func(prompts []string) (diffusion.Model, error) {
			return p.WithPrompts(prompts, len(prompts), nil)
		})
	}
	if err == nil && text && p.OpenAI != nil && p.OpenAI.Kind() == adm.InpaintText2Im {
		// A request's init_image and mask are the inpainting model's known
		// image, as ddpm sample's glideModel binds --init-image and --mask.
		err = gen.SetTextInpaint(func(prompts []string, k *server.Known) (diffusion.Model, func(diffusion.Batch) error, error) {
			in := &pipeline.TextInputs{InpaintImage: &k.Image, InpaintMask: &k.Mask}
			m, err := p.WithPrompts(prompts, len(prompts), in)
			return m, in.KeepKnown, err
		})
	}
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	release := p.Close
	if o.classifier != "" {
		c, err := pipeline.OpenClassifier(ctx, o.classifier, pipeline.Options{Device: o.device, GPU: cuda.Options{Precision: o.prec}})
		if err == nil {
			err = checkServeClassifier(c, p, info)
		}
		if err == nil {
			err = gen.SetClassifier(modelName(o.classifier), c.Guidance)
		}
		if err != nil {
			if c != nil {
				c.Close()
			}
			p.Close()
			return nil, nil, fmt.Errorf("serve: --classifier: %w", err)
		}
		release = func() { c.Close(); p.Close() }
		log.Info("classifier loaded", "classifier", o.classifier, "classes", c.Classes(), "device", c.Device)
	}
	log.Info("model loaded", "model", info.Name, "path", p.Source.Path, "format", p.Source.Format.String(),
		"params", p.Source.NumParams(), "size", info.ImageSize, "classes", info.NumClasses, "text", text, "T", p.Diffusion.T(), "device", p.Device)
	if o.up.model != "" { // every image goes through the upsampler
		ug, closeUp, err := wrapServeUpsample(ctx, o, gen, gen.Info(), log)
		if err != nil {
			release()
			return nil, nil, err
		}
		base := release
		return ug, func() { closeUp(); base() }, nil
	}
	return gen, release, nil
}

// checkServeClassifier reports whether c can guide p's requests: the
// model's images and schedule, and one logit per model class.
func checkServeClassifier(c *pipeline.Classifier, p *pipeline.Pipeline, info server.ModelInfo) error {
	if err := c.Check(p); err != nil {
		return err
	}
	if info.NumClasses == 0 {
		return fmt.Errorf("the model is unconditional: the server guides class-conditional models (sample unconditional ones with ddpm sample --classifier)")
	}
	if c.Classes() != info.NumClasses {
		return fmt.Errorf("the classifier tells %d classes apart, the model has %d", c.Classes(), info.NumClasses)
	}
	return nil
}

// serveModelInfo describes the model named by o.model without loading it
// on a device: what a cluster's api replica needs to validate requests.
func serveModelInfo(ctx context.Context, o serveOptions, log *slog.Logger) (server.ModelInfo, error) {
	name := "default"
	if o.model != "" {
		name = modelName(o.model)
	}
	src, err := pipeline.OpenSource(ctx, o.model, func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) })
	if err != nil {
		return server.ModelInfo{}, err
	}
	d, err := pipeline.DiffusionFor(src)
	if err != nil {
		return server.ModelInfo{}, err
	}
	info, err := serveInfo(src, name)
	if err != nil {
		return server.ModelInfo{}, err
	}
	info.Device = "cluster workers"
	if o.classifier != "" {
		if info.Text {
			return server.ModelInfo{}, fmt.Errorf("serve: --classifier: the model is GLIDE's text-to-image model: guide it with guidance_scale")
		}
		if info.NumClasses == 0 {
			return server.ModelInfo{}, fmt.Errorf("serve: --classifier: the model is unconditional")
		}
		info.Classifier = modelName(o.classifier)
	}
	info, err = server.DiffusionInfo(d, info)
	if err != nil || o.up.model == "" {
		return info, err
	}
	return serveUpsampleInfo(ctx, o, info, log)
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

// unetConfigKeys are the diffusers UNet2DModel config keys the server needs.
type unetConfigKeys struct {
	SampleSize     json.RawMessage `json:"sample_size"` // an int or [h, w]
	InChannels     int             `json:"in_channels"`
	NumClassEmbeds *int            `json:"num_class_embeds"`
	NullClass      *int            `json:"ddpm_null_class"`
}

// serveInfo describes src for the server: square image size, channels and
// classes from the UNet config, class names from the model file. Of
// guided-diffusion's networks it serves the diffusion models (UNetModel:
// 64x64_diffusion.pt and the other class-conditional ImageNet models,
// whose 1000 classes are named by package imagenet; the unconditional
// 256x256_diffusion_uncond.pt and the LSUN models) and GLIDE's
// text-to-image models (Text; glide-text2im's base.pt, and
// base_inpaint.pt, whose requests' init_image and mask are its known
// image); not their upsamplers (ddpm serve --upsample) or classifiers
// (--classifier).
func serveInfo(src *weights.Source, name string) (server.ModelInfo, error) {
	if adm.IsConfig(src.UNetConfig) {
		cfg, err := adm.ParseArgs(src.UNetConfig)
		if err != nil {
			return server.ModelInfo{}, fmt.Errorf("model %s: %w", src.Path, err)
		}
		switch cfg.Kind {
		case adm.Text2Im, adm.InpaintText2Im:
			return server.ModelInfo{Name: name, ImageSize: cfg.ImageSize, Channels: 3, Text: true}, nil
		case adm.UNet:
			return admServeInfo(src, cfg, name), nil
		}
		hint := "sample it with ddpm sample"
		switch {
		case cfg.Kind == adm.Classifier:
			hint = "give it to a class-conditional model with --classifier"
		case cfg.Kind == adm.SuperRes || cfg.Kind.IsText():
			hint = "put it after its base model with --upsample"
		}
		return server.ModelInfo{}, fmt.Errorf("model %s is guided-diffusion's %s: ddpm serve --model takes guided-diffusion's diffusion models "+
			"(UNetModel: 64x64_diffusion.pt, 256x256_diffusion_uncond.pt, the LSUN models) and GLIDE's text-to-image models "+
			"(glide-text2im's base.pt, base_inpaint.pt); %s", src.Path, cfg.Kind, hint)
	}
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
		} else {
			info.NoNullClass = true // no unconditional output to guide against
		}
	}
	if info.ClassNames != nil && len(info.ClassNames) != info.NumClasses {
		info.ClassNames = nil // names that do not match the embedding are not trusted
	}
	return info, nil
}

// admServeInfo describes guided-diffusion's UNetModel: RGB images (or
// ddpm's in_channels), and when class_cond its classes, as pipeline.Open
// counts them (num_classes, else ImageNet's 1000), named by the model
// file's names when it has one per class, else by package imagenet's
// first lemmas for 1000 classes ("golden retriever" is 207), else by
// index. The released models were trained without a null class:
// NoNullClass refuses classifier-free guidance, and classifier guidance
// (--classifier) is what steers them.
func admServeInfo(src *weights.Source, cfg adm.Config, name string) server.ModelInfo {
	info := server.ModelInfo{Name: name, ImageSize: cfg.ImageSize, Channels: 3}
	if cfg.InChannels > 0 {
		info.Channels = cfg.InChannels
	}
	if !cfg.ClassCond {
		return info
	}
	info.NumClasses, info.NoNullClass = adm.NumClasses, true
	if cfg.NumClasses > 0 {
		info.NumClasses = cfg.NumClasses
	}
	switch {
	case len(src.ClassNames) == info.NumClasses:
		info.ClassNames = src.ClassNames
	case info.NumClasses == imagenet.NumClasses:
		info.ClassNames = imagenet.Names()
	}
	return info
}
