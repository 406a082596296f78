package unet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/ddpm-go/ddpm/weights"
)

// Config is diffusers' UNet2DModel configuration (the keys of its
// config.json). Only the values the DDPM family uses are supported; any
// other value is an error from Validate that names the key.
type Config struct {
	SampleSize           int      `json:"sample_size"`
	InChannels           int      `json:"in_channels"`
	OutChannels          int      `json:"out_channels"` // 2*InChannels for a learned variance
	CenterInputSample    bool     `json:"center_input_sample"`
	TimeEmbeddingType    string   `json:"time_embedding_type"` // "positional"
	FlipSinToCos         bool     `json:"flip_sin_to_cos"`
	FreqShift            float64  `json:"freq_shift"`
	DownBlockTypes       []string `json:"down_block_types"`
	UpBlockTypes         []string `json:"up_block_types"`
	BlockOutChannels     []int    `json:"block_out_channels"`
	LayersPerBlock       int      `json:"layers_per_block"`
	MidBlockScaleFactor  float64  `json:"mid_block_scale_factor"` // 1
	DownsamplePadding    int      `json:"downsample_padding"`
	DownsampleType       string   `json:"downsample_type,omitempty"` // "conv"
	UpsampleType         string   `json:"upsample_type,omitempty"`   // "conv"
	Dropout              float64  `json:"dropout"`
	ActFn                string   `json:"act_fn"` // "silu"
	AttentionHeadDim     *int     `json:"attention_head_dim"`
	NormNumGroups        int      `json:"norm_num_groups"`
	NormEps              float64  `json:"norm_eps"`
	ResnetTimeScaleShift string   `json:"resnet_time_scale_shift"` // "default"
	AddAttention         *bool    `json:"add_attention,omitempty"`
	ClassEmbedType       *string  `json:"class_embed_type"` // null: an embedding table
	NumClassEmbeds       *int     `json:"num_class_embeds"`
	// NullClass, a ddpm extension, is the class index that means "no
	// label" for classifier-free guidance (usually num_class_embeds-1);
	// nil when the model was not trained with label dropout.
	NullClass *int `json:"ddpm_null_class,omitempty"`
}

// ParseConfig decodes a diffusers UNet2DModel config.json, fills the
// defaults diffusers uses for absent keys and validates it.
func ParseConfig(b []byte) (Config, error) {
	c := Config{
		SampleSize: 32, InChannels: 3, OutChannels: 3, TimeEmbeddingType: "positional", FlipSinToCos: true,
		LayersPerBlock: 2, MidBlockScaleFactor: 1, DownsamplePadding: 1, ActFn: "silu", NormNumGroups: 32,
		NormEps: 1e-5, ResnetTimeScaleShift: "default",
		DownBlockTypes:   []string{"DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"},
		UpBlockTypes:     []string{"AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"},
		BlockOutChannels: []int{224, 448, 672, 896},
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("unet: config: %w", err)
	}
	// Keys whose absence and null differ, and keys ddpm reads only to
	// refuse what it cannot honour.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return Config{}, fmt.Errorf("unet: config: %w", err)
	}
	if _, ok := raw["attention_head_dim"]; !ok {
		d := 8 // diffusers' default; null means one head of all the channels
		c.AttentionHeadDim = &d
	}
	if v, ok := raw["time_embedding_dim"]; ok && string(bytes.TrimSpace(v)) != "null" {
		var d int
		if err := json.Unmarshal(v, &d); err != nil || len(c.BlockOutChannels) == 0 || d != 4*c.BlockOutChannels[0] {
			return Config{}, fmt.Errorf("unet: config time_embedding_dim = %s: only null or 4*block_out_channels[0] (the default) is supported", v)
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// JSON returns the config as diffusers-style JSON.
func (c Config) JSON() []byte {
	b, _ := json.MarshalIndent(struct {
		Class string `json:"_class_name"`
		Config
	}{"UNet2DModel", c}, "", "  ")
	return b
}

func (c Config) attentionAt(level int) bool { return c.DownBlockTypes[level] == "AttnDownBlock2D" }

func (c Config) midAttention() bool { return c.AddAttention == nil || *c.AddAttention }

// numClasses is num_class_embeds, or 0 for an unconditional model.
func (c Config) numClasses() int {
	if c.NumClassEmbeds == nil {
		return 0
	}
	return *c.NumClassEmbeds
}

// heads returns the number of attention heads and their size for a layer
// of ch channels (diffusers: attention_head_dim null means one head).
func (c Config) heads(ch int) (int, int) {
	if c.AttentionHeadDim == nil {
		return 1, ch
	}
	return ch / *c.AttentionHeadDim, *c.AttentionHeadDim
}

// Sanity limits of Validate: configs come from files, and a model far
// beyond these would not fit in memory anyway.
const (
	maxLevels     = 8
	maxChannels   = 8192
	maxIOChannels = 64
	maxLayers     = 16
	maxSampleSize = 4096
	maxClasses    = 1 << 20
)

// Validate reports the first unsupported or inconsistent value, naming its key.
func (c Config) Validate() error {
	bad := func(key string, v any, allowed string) error {
		return fmt.Errorf("unet: config %s = %v: %s", key, v, allowed)
	}
	n := len(c.BlockOutChannels)
	switch {
	case c.InChannels < 1:
		return bad("in_channels", c.InChannels, "must be >= 1")
	case c.OutChannels < 1:
		return bad("out_channels", c.OutChannels, "must be >= 1")
	case n < 1 || n > maxLevels:
		return bad("block_out_channels", c.BlockOutChannels, fmt.Sprintf("needs 1 to %d levels", maxLevels))
	case c.InChannels > maxIOChannels:
		return bad("in_channels", c.InChannels, fmt.Sprintf("must be <= %d", maxIOChannels))
	case c.OutChannels > maxIOChannels:
		return bad("out_channels", c.OutChannels, fmt.Sprintf("must be <= %d", maxIOChannels))
	case c.LayersPerBlock > maxLayers:
		return bad("layers_per_block", c.LayersPerBlock, fmt.Sprintf("must be <= %d", maxLayers))
	case c.SampleSize > maxSampleSize:
		return bad("sample_size", c.SampleSize, fmt.Sprintf("must be <= %d", maxSampleSize))
	case c.NumClassEmbeds != nil && *c.NumClassEmbeds > maxClasses:
		return bad("num_class_embeds", *c.NumClassEmbeds, fmt.Sprintf("must be <= %d", maxClasses))
	case len(c.DownBlockTypes) != n:
		return bad("down_block_types", c.DownBlockTypes, fmt.Sprintf("needs one entry per block_out_channels entry (%d)", n))
	case len(c.UpBlockTypes) != n:
		return bad("up_block_types", c.UpBlockTypes, fmt.Sprintf("needs one entry per block_out_channels entry (%d)", n))
	case c.LayersPerBlock < 1:
		return bad("layers_per_block", c.LayersPerBlock, "must be >= 1")
	case c.NormNumGroups < 1:
		return bad("norm_num_groups", c.NormNumGroups, "must be >= 1")
	case !(c.NormEps > 0):
		return bad("norm_eps", c.NormEps, "must be > 0")
	case c.TimeEmbeddingType != "positional":
		return bad("time_embedding_type", c.TimeEmbeddingType, `only "positional" is supported`)
	case c.ActFn != "silu":
		return bad("act_fn", c.ActFn, `only "silu" is supported`)
	case c.ResnetTimeScaleShift != "default":
		return bad("resnet_time_scale_shift", c.ResnetTimeScaleShift, `only "default" is supported`)
	case c.MidBlockScaleFactor != 1:
		return bad("mid_block_scale_factor", c.MidBlockScaleFactor, "only 1 is supported")
	case c.DownsamplePadding != 0 && c.DownsamplePadding != 1:
		return bad("downsample_padding", c.DownsamplePadding, "must be 0 or 1")
	case c.DownsampleType != "" && c.DownsampleType != "conv":
		return bad("downsample_type", c.DownsampleType, `only "conv" is supported`)
	case c.UpsampleType != "" && c.UpsampleType != "conv":
		return bad("upsample_type", c.UpsampleType, `only "conv" is supported`)
	case c.Dropout < 0 || c.Dropout >= 1:
		return bad("dropout", c.Dropout, "must be in [0, 1)")
	case c.ClassEmbedType != nil:
		return bad("class_embed_type", *c.ClassEmbedType, "only null (an embedding table) is supported")
	case c.NumClassEmbeds != nil && *c.NumClassEmbeds < 1:
		return bad("num_class_embeds", *c.NumClassEmbeds, "must be >= 1 or null")
	case c.NullClass != nil && (c.NumClassEmbeds == nil || *c.NullClass < 0 || *c.NullClass >= *c.NumClassEmbeds):
		return bad("ddpm_null_class", *c.NullClass, "must index a class embedding")
	case c.AttentionHeadDim != nil && *c.AttentionHeadDim < 1:
		return bad("attention_head_dim", *c.AttentionHeadDim, "must be >= 1, or null for one head of all the channels")
	case c.SampleSize < 1 || c.SampleSize%(1<<(n-1)) != 0:
		return bad("sample_size", c.SampleSize, fmt.Sprintf("must be a positive multiple of %d (2^(levels-1))", 1<<(n-1)))
	}
	down := []string{"DownBlock2D", "AttnDownBlock2D"}
	up := []string{"UpBlock2D", "AttnUpBlock2D"}
	for i := range n {
		if !slices.Contains(down, c.DownBlockTypes[i]) {
			return bad(fmt.Sprintf("down_block_types[%d]", i), c.DownBlockTypes[i], "supported: DownBlock2D, AttnDownBlock2D")
		}
		if !slices.Contains(up, c.UpBlockTypes[i]) {
			return bad(fmt.Sprintf("up_block_types[%d]", i), c.UpBlockTypes[i], "supported: UpBlock2D, AttnUpBlock2D")
		}
		if ch := c.BlockOutChannels[i]; ch > maxChannels {
			return bad(fmt.Sprintf("block_out_channels[%d]", i), ch, fmt.Sprintf("must be <= %d", maxChannels))
		}
		if ch := c.BlockOutChannels[i]; ch < 1 || ch%c.NormNumGroups != 0 {
			return bad(fmt.Sprintf("block_out_channels[%d]", i), ch, fmt.Sprintf("must be a positive multiple of norm_num_groups (%d)", c.NormNumGroups))
		}
		if h, d := c.heads(c.BlockOutChannels[i]); h*d != c.BlockOutChannels[i] {
			return bad("attention_head_dim", *c.AttentionHeadDim, fmt.Sprintf("must divide block_out_channels[%d] = %d", i, c.BlockOutChannels[i]))
		}
	}
	return nil
}

// Preset returns a named configuration:
//
//   - "ddpm-cifar10": google/ddpm-cifar10-32 (Ho et al. 2020's CIFAR-10
//     model, 35,746,307 parameters): 128,256,256,256 channels, two ResNet
//     blocks per level, attention at 16x16, dropout 0.1.
//   - "mnist": a class-conditional 32x32 grayscale model for digits padded
//     to 32x32, classes 0-9 plus a null class 10 for classifier-free
//     guidance; 32,64,64 channels, one ResNet block per level, attention
//     at 16x16 and 8x8 (1,164,513 parameters). Measured on the 2-core
//     dev machine: ~75 training images/s at batch 64 (forward, backward,
//     AdamW), so two hours are ~8,500 steps of 64, about nine MNIST
//     epochs, enough for clean digits; wider models halve that budget.
func Preset(name string) (Config, error) {
	eps := 1e-6
	switch name {
	case "ddpm-cifar10":
		return Config{
			SampleSize: 32, InChannels: 3, OutChannels: 3, TimeEmbeddingType: "positional",
			FlipSinToCos: false, FreqShift: 1, LayersPerBlock: 2, MidBlockScaleFactor: 1, DownsamplePadding: 0,
			DownsampleType: "conv", UpsampleType: "conv", Dropout: 0.1, ActFn: "silu", NormNumGroups: 32, NormEps: eps,
			ResnetTimeScaleShift: "default",
			BlockOutChannels:     []int{128, 256, 256, 256},
			DownBlockTypes:       []string{"DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"},
			UpBlockTypes:         []string{"UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"},
		}, nil
	case "mnist":
		classes, null := 11, 10
		return Config{
			SampleSize: 32, InChannels: 1, OutChannels: 1, TimeEmbeddingType: "positional",
			FlipSinToCos: true, FreqShift: 0, LayersPerBlock: 1, MidBlockScaleFactor: 1, DownsamplePadding: 1,
			DownsampleType: "conv", UpsampleType: "conv", Dropout: 0, ActFn: "silu", NormNumGroups: 8, NormEps: eps,
			ResnetTimeScaleShift: "default",
			BlockOutChannels:     []int{32, 64, 64},
			DownBlockTypes:       []string{"DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"},
			UpBlockTypes:         []string{"AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"},
			NumClassEmbeds:       &classes, NullClass: &null,
		}, nil
	}
	return Config{}, fmt.Errorf("unet: unknown preset %q (known: ddpm-cifar10, mnist)", name)
}

// NumParams is the number of parameter values the config implies,
// computed without building anything (so a file's config can be checked
// against its weights, and refused, before any memory is allocated).
func (c Config) NumParams() int64 {
	conv := func(cin, cout, k int64) int64 { return cout*cin*k*k + cout }
	lin := func(in, out int64) int64 { return in*out + out }
	norm := func(ch int64) int64 { return 2 * ch }
	c0 := int64(c.BlockOutChannels[0])
	temb := 4 * c0
	n := lin(c0, temb) + lin(temb, temb) + conv(int64(c.InChannels), c0, 3)
	if k := c.numClasses(); k > 0 {
		n += int64(k) * temb
	}
	resnet := func(cin, cout int64) int64 {
		r := norm(cin) + conv(cin, cout, 3) + lin(temb, cout) + norm(cout) + conv(cout, cout, 3)
		if cin != cout {
			r += conv(cin, cout, 1)
		}
		return r
	}
	attn := func(ch int64) int64 { return norm(ch) + 4*lin(ch, ch) }
	levels := len(c.BlockOutChannels)
	ch := c0
	skips := []int64{c0}
	for i, out := range c.BlockOutChannels {
		o := int64(out)
		for j := 0; j < c.LayersPerBlock; j++ {
			n += resnet(ch, o)
			ch = o
			if c.attentionAt(i) {
				n += attn(o)
			}
			skips = append(skips, ch)
		}
		if i < levels-1 {
			n += conv(ch, ch, 3)
			skips = append(skips, ch)
		}
	}
	n += 2 * resnet(ch, ch)
	if c.midAttention() {
		n += attn(ch)
	}
	for i := 0; i < levels; i++ {
		o := int64(c.BlockOutChannels[levels-1-i])
		for j := 0; j <= c.LayersPerBlock; j++ {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			n += resnet(ch+skip, o)
			ch = o
			if c.UpBlockTypes[i] == "AttnUpBlock2D" {
				n += attn(o)
			}
		}
		if i < levels-1 {
			n += conv(ch, ch, 3)
		}
	}
	return n + norm(ch) + conv(ch, int64(c.OutChannels), 3)
}

// DefaultMaxBytes is the memory a model may need (its parameters and the
// activations of one image, as estimated by Bytes) before NewOn and
// FromSourceOn refuse it: 8 GiB, far above any model of the DDPM family
// (google/ddpm-cifar10-32: about 0.2 GiB), far below what a hostile config
// could ask for. NewOnLimited raises it.
const DefaultMaxBytes = 8 << 30

// Bytes estimates the memory the model needs for a batch of n images at
// its sample size, before anything is built: the parameters (float32),
// and an upper bound on the activations a training step keeps (about a
// dozen tensors per ResNet block at each resolution).
func (c Config) Bytes(n int) int64 {
	total := 4 * c.NumParams()
	side := int64(c.SampleSize)
	per := int64(0)
	for i, ch := range c.BlockOutChannels {
		blocks := int64(2*c.LayersPerBlock + 1)
		maps := 14 * blocks * int64(ch) * side * side
		if c.attentionAt(i) {
			maps += blocks * side * side * side * side // attention scores (T x T), one head's worth
		}
		per += maps
		if side > 1 {
			side /= 2
		}
	}
	return total + 4*per*int64(max(n, 1))
}

// CheckSize refuses a config whose parameters and one image's activations
// (Bytes(1)) exceed maxBytes (DefaultMaxBytes when 0), with an error that
// says how much it would need.
func (c Config) CheckSize(maxBytes int64) error {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if need := c.Bytes(1); need > maxBytes || need < 0 {
		return fmt.Errorf("unet: config asks for %d parameters and about %.1f GiB of memory (the limit is %.1f GiB; raise it if the model is meant to be this large)",
			c.NumParams(), float64(need)/(1<<30), float64(maxBytes)/(1<<30))
	}
	return nil
}

// checkWeights compares the tensors of a file with the parameter count
// the config implies before anything is allocated: a config that asks for
// far more than the file holds (a hostile or broken file) is refused
// without building the network.
func (c Config) checkWeights(t map[string]weights.Tensor) error {
	var have int64
	for _, v := range t {
		have += int64(v.NumElements())
	}
	if want := c.NumParams(); want != have {
		return fmt.Errorf("the UNet config implies %d parameters, the weights hold %d: config and weights do not belong together", want, have)
	}
	return nil
}
