package adm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Kind names the guided-diffusion network a Config builds; it is the
// config's "_class_name", the Python class.
type Kind string

// The networks of guided_diffusion/unet.py.
const (
	// UNet is UNetModel: the diffusion model (create_model).
	UNet Kind = "UNetModel"
	// SuperRes is SuperResModel: a UNetModel whose input is the noisy
	// image concatenated with the bilinearly upsampled low-resolution
	// image (sr_create_model, the 64_256 and 128_512 upsamplers).
	SuperRes Kind = "SuperResModel"
	// Classifier is EncoderUNetModel: the noisy ImageNet classifier
	// (create_classifier), the encoder half and a pooling head.
	Classifier Kind = "EncoderUNetModel"
)

// The networks of glide-text2im's text2im_model.py (see glide.go).
const (
	// Text2Im is Text2ImUNet: GLIDE's text-conditional diffusion model.
	Text2Im Kind = "Text2ImUNet"
	// InpaintText2Im is InpaintText2ImUNet: Text2ImUNet whose input is
	// the noisy image, the masked known image and the mask (7 channels).
	InpaintText2Im Kind = "InpaintText2ImUNet"
	// SuperResText2Im is SuperResText2ImUNet: Text2ImUNet whose input is
	// the noisy image and the bilinearly upsampled low-resolution image.
	SuperResText2Im Kind = "SuperResText2ImUNet"
	// SuperResInpaintText2Im is SuperResInpaintText2ImUnet (sic): both
	// inputs, in the order image, masked image, mask, low-resolution.
	SuperResInpaintText2Im Kind = "SuperResInpaintText2ImUnet"
)

// NumClasses is guided-diffusion's NUM_CLASSES (ImageNet).
const NumClasses = 1000

// Config holds the flags of guided-diffusion's scripts that define a
// network and its diffusion (script_util.py's model_and_diffusion_defaults,
// sr_model_and_diffusion_defaults and classifier_defaults), under the
// scripts' names. A classifier's classifier_* flags are stored under the
// unprefixed names (classifier_width is num_channels, classifier_depth
// num_res_blocks, classifier_pool pool). It is the JSON kept in a
// converted model file's metadata.
type Config struct {
	Kind Kind `json:"_class_name"`
	// ImageSize is image_size (large_size for SuperRes).
	ImageSize int `json:"image_size"`
	// SmallSize is small_size, the low-resolution input of SuperRes.
	SmallSize            int     `json:"small_size,omitempty"`
	NumChannels          int     `json:"num_channels"`
	NumResBlocks         int     `json:"num_res_blocks"`
	ChannelMult          string  `json:"channel_mult"` // "" = create_model's default for ImageSize
	LearnSigma           bool    `json:"learn_sigma"`
	ClassCond            bool    `json:"class_cond"`
	AttentionResolutions string  `json:"attention_resolutions"` // e.g. "32,16,8" (resolutions, not rates)
	NumHeads             int     `json:"num_heads"`
	NumHeadChannels      int     `json:"num_head_channels"`  // -1: use NumHeads
	NumHeadsUpsample     int     `json:"num_heads_upsample"` // -1: NumHeads
	UseScaleShiftNorm    bool    `json:"use_scale_shift_norm"`
	Dropout              float64 `json:"dropout"`
	ResblockUpdown       bool    `json:"resblock_updown"`
	UseFP16              bool    `json:"use_fp16"`
	UseNewAttentionOrder bool    `json:"use_new_attention_order"`
	// Pool is classifier_pool: adaptive, attention, spatial or spatial_v2.
	Pool string `json:"pool,omitempty"`

	// ddpm's extensions, for networks trained here (ddpm
	// train-classifier on MNIST, say); guided-diffusion fixes them.
	// InChannels is the image's channel count (0: 3, RGB).
	InChannels int `json:"in_channels,omitempty"`
	// NumClasses is the class count of class_cond and of a classifier's
	// logits (0: NumClasses, ImageNet's 1000).
	NumClasses int `json:"num_classes,omitempty"`

	// The diffusion flags (diffusion_defaults).
	DiffusionSteps       int    `json:"diffusion_steps"`
	NoiseSchedule        string `json:"noise_schedule"`
	TimestepRespacing    string `json:"timestep_respacing"`
	UseKL                bool   `json:"use_kl"`
	PredictXStart        bool   `json:"predict_xstart"`
	RescaleTimesteps     bool   `json:"rescale_timesteps"`
	RescaleLearnedSigmas bool   `json:"rescale_learned_sigmas"`

	// *TextConfig holds GLIDE's text flags; it is nil for
	// guided-diffusion's networks and set for the GLIDE kinds. Copies of
	// a Config share it: give a copy a new TextConfig to change its flags.
	*TextConfig
}

// DefaultConfig returns the scripts' defaults for kind: for UNet
// model_and_diffusion_defaults(), for SuperRes
// sr_model_and_diffusion_defaults() (large_size 256, small_size 64), for
// Classifier classifier_defaults() (width 128, depth 2, attention at
// 32,16,8, scale-shift norm, resblock up/down, attention pool).
func DefaultConfig(kind Kind) Config {
	c := Config{Kind: kind, ImageSize: 64, NumChannels: 128, NumResBlocks: 2, NumHeads: 4, NumHeadChannels: -1,
		NumHeadsUpsample: -1, AttentionResolutions: "16,8", UseScaleShiftNorm: true,
		DiffusionSteps: 1000, NoiseSchedule: "linear"}
	switch kind {
	case SuperRes:
		c.ImageSize, c.SmallSize = 256, 64
	case Classifier:
		c.NumChannels, c.NumResBlocks, c.AttentionResolutions = 128, 2, "32,16,8"
		c.ResblockUpdown, c.Pool = true, "attention"
		c.NumHeads, c.NumHeadChannels = 1, 64
	case Text2Im, InpaintText2Im, SuperResText2Im, SuperResInpaintText2Im:
		c = glideDefaults(kind)
	}
	return c
}

// ignoredFlags are flags of the scripts that do not change the network
// (sampling, training and checkpointing options, gradient checkpointing):
// accepted in args.json and flag strings, and dropped.
var ignoredFlags = map[string]bool{
	"use_checkpoint": true, "clip_denoised": true, "num_samples": true, "batch_size": true, "use_ddim": true,
	"model_path": true, "classifier_path": true, "classifier_scale": true, "base_samples": true,
	"data_dir": true, "val_data_dir": true, "schedule_sampler": true, "lr": true, "weight_decay": true,
	"lr_anneal_steps": true, "microbatch": true, "ema_rate": true, "log_interval": true, "save_interval": true,
	"resume_checkpoint": true, "fp16_scale_growth": true, "iterations": true, "anneal_lr": true, "noised": true,
	"eval_interval": true, "class_cond_classifier": true,
}

// classifierFlags maps create_classifier's flags to Config's fields.
var classifierFlags = map[string]string{
	"classifier_width": "num_channels", "classifier_depth": "num_res_blocks",
	"classifier_attention_resolutions": "attention_resolutions", "classifier_use_scale_shift_norm": "use_scale_shift_norm",
	"classifier_resblock_updown": "resblock_updown", "classifier_pool": "pool", "classifier_use_fp16": "use_fp16",
	// ddpm's: create_classifier derives channel_mult from image_size.
	"classifier_channel_mult": "channel_mult",
}

// ParseArgs reads a network's flags as JSON: an args.json of the scripts'
// flags (argparse values: JSON numbers and booleans, or strings as
// str2bool reads them), a --config file, or the JSON of a converted model
// (with "_class_name"). The kind is "_class_name" when present, else
// Classifier when any classifier_* flag is given, SuperRes when
// large_size is, UNet otherwise; flags not given keep the script's
// defaults. Unknown flags are an error naming them.
func ParseArgs(b []byte) (Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return Config{}, fmt.Errorf("adm: config is not a JSON object: %w", err)
	}
	vals := make(map[string]string, len(raw))
	for k, v := range raw {
		s, err := scalar(v)
		if err != nil {
			return Config{}, fmt.Errorf("adm: config key %q: %w", k, err)
		}
		vals[k] = s
	}
	return fromFlags(vals)
}

// ParseFlags reads a network's flags written as the READMEs print them,
// e.g. "--attention_resolutions 32,16,8 --class_cond True --image_size 64"
// ("--key value" or "--key=value"), as ParseArgs does.
func ParseFlags(s string) (Config, error) {
	fields := strings.Fields(s)
	vals := map[string]string{}
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if !strings.HasPrefix(f, "--") {
			return Config{}, fmt.Errorf("adm: flags: %q: want --name value", f)
		}
		name := strings.TrimPrefix(f, "--")
		if k, v, ok := strings.Cut(name, "="); ok {
			vals[k] = v
			continue
		}
		if i+1 >= len(fields) || strings.HasPrefix(fields[i+1], "--") {
			return Config{}, fmt.Errorf("adm: flags: --%s has no value", name)
		}
		vals[name] = fields[i+1]
		i++
	}
	return fromFlags(vals)
}

// scalar turns a JSON value into the string argparse would have seen:
// strings as they are, numbers and booleans in their JSON spelling,
// arrays of numbers comma-joined (channel_mult [1, 2, 2]).
func scalar(v json.RawMessage) (string, error) {
	v = bytes.TrimSpace(v)
	switch {
	case len(v) == 0:
		return "", fmt.Errorf("empty value")
	case v[0] == '"':
		var s string
		err := json.Unmarshal(v, &s)
		return s, err
	case v[0] == '[':
		var xs []json.Number
		if err := json.Unmarshal(v, &xs); err != nil {
			return "", fmt.Errorf("want a list of numbers: %w", err)
		}
		parts := make([]string, len(xs))
		for i, x := range xs {
			parts[i] = x.String()
		}
		return strings.Join(parts, ","), nil
	case string(v) == "null":
		return "", nil
	case v[0] == '{':
		return "", fmt.Errorf("want a number, boolean or string, not an object")
	}
	return string(v), nil
}

// fromFlags applies flag values over the kind's defaults.
func fromFlags(vals map[string]string) (Config, error) {
	kind := UNet
	if k, ok := vals["_class_name"]; ok {
		if !knownKind(Kind(k)) {
			return Config{}, fmt.Errorf("adm: _class_name %q: allowed are %s", k, kindList())
		}
		kind = Kind(k)
	} else if isGlideFlags(vals) {
		kind = Text2Im
	} else {
		for name := range vals {
			if _, ok := classifierFlags[name]; ok {
				kind = Classifier
			}
		}
		if _, ok := vals["large_size"]; ok && kind != Classifier {
			kind = SuperRes
		}
	}
	c := DefaultConfig(kind)
	names := make([]string, 0, len(vals))
	for k := range vals {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		v := vals[name]
		key := name
		if kind == Classifier {
			if k, ok := classifierFlags[name]; ok {
				key = k
			} else if _, stored := vals["_class_name"]; name == "channel_mult" && !stored {
				continue // the diffusion model's, beside the classifier's flags
			}
		}
		if kind == SuperRes && key == "large_size" {
			key = "image_size"
		}
		if err := c.set(key, v); err != nil {
			return Config{}, fmt.Errorf("adm: flag %s = %q: %w", name, v, err)
		}
	}
	if err := c.settleGlideKind(vals); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// set assigns one flag.
func (c *Config) set(key, v string) error {
	var err error
	switch key {
	case "_class_name", "kind":
	case "image_size":
		c.ImageSize, err = parseInt(v)
	case "small_size":
		c.SmallSize, err = parseInt(v)
	case "num_channels":
		c.NumChannels, err = parseInt(v)
	case "num_res_blocks":
		c.NumResBlocks, err = parseInt(v)
	case "channel_mult":
		c.ChannelMult = v
	case "learn_sigma":
		c.LearnSigma, err = str2bool(v)
	case "class_cond":
		c.ClassCond, err = str2bool(v)
	case "attention_resolutions":
		c.AttentionResolutions = v
	case "num_heads":
		c.NumHeads, err = parseInt(v)
	case "num_head_channels":
		c.NumHeadChannels, err = parseInt(v)
	case "num_heads_upsample":
		c.NumHeadsUpsample, err = parseInt(v)
	case "use_scale_shift_norm":
		c.UseScaleShiftNorm, err = str2bool(v)
	case "dropout":
		c.Dropout, err = strconv.ParseFloat(v, 64)
	case "resblock_updown":
		c.ResblockUpdown, err = str2bool(v)
	case "use_fp16":
		c.UseFP16, err = str2bool(v)
	case "use_new_attention_order":
		c.UseNewAttentionOrder, err = str2bool(v)
	case "pool":
		c.Pool = v
	case "in_channels":
		c.InChannels, err = parseInt(v)
	case "num_classes":
		c.NumClasses, err = parseInt(v)
	case "diffusion_steps":
		c.DiffusionSteps, err = parseInt(v)
	case "noise_schedule":
		c.NoiseSchedule = v
	case "timestep_respacing":
		c.TimestepRespacing = v
	case "use_kl":
		c.UseKL, err = str2bool(v)
	case "predict_xstart":
		c.PredictXStart, err = str2bool(v)
	case "rescale_timesteps":
		c.RescaleTimesteps, err = str2bool(v)
	case "rescale_learned_sigmas":
		c.RescaleLearnedSigmas, err = str2bool(v)
	default:
		if ignoredFlags[key] {
			return nil
		}
		if ok, err := c.setText(key, v); ok {
			return err
		}
		return fmt.Errorf("unknown flag (not one of guided-diffusion's model, classifier or diffusion flags, nor GLIDE's)")
	}
	return err
}

func parseInt(v string) (int, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil && f == float64(int(f)) {
		return int(f), nil
	}
	return 0, fmt.Errorf("want an integer")
}

// str2bool is script_util.str2bool.
func str2bool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "yes", "true", "t", "y", "1":
		return true, nil
	case "no", "false", "f", "n", "0":
		return false, nil
	}
	return false, fmt.Errorf("want a boolean (true/false, yes/no, t/f, y/n, 1/0)")
}

// JSON returns the config as stored in a converted model file.
func (c Config) JSON() []byte {
	b, _ := json.MarshalIndent(c, "", "  ")
	return b
}

// IsConfig reports whether b is the JSON of an ADM network (a converted
// model's metadata), by its "_class_name".
func IsConfig(b []byte) bool {
	var v struct {
		Class string `json:"_class_name"`
	}
	if json.Unmarshal(b, &v) != nil {
		return false
	}
	return knownKind(Kind(v.Class))
}

// arch is a Config resolved into the constructor arguments of
// guided_diffusion/unet.py.
type arch struct {
	kind            Kind
	size            int       // image_size
	img             int       // the image's channels (3; in_channels of ddpm's extension)
	in, out, model  int       // in_channels, out_channels, model_channels
	mult            []float64 // channel_mult
	attnDS          []int     // attention_resolutions as downsample rates
	classes         int       // num_classes (0: none)
	heads, headsUp  int       // num_heads, num_heads_upsample
	headCh          int       // num_head_channels (-1: use heads)
	blocks          int       // num_res_blocks
	scaleShift      bool
	updown          bool
	newOrder        bool
	dropout         float64
	pool            string
	timeEmbed       int // time_embed_dim = 4 * model_channels
	levels          int
	finalDS         int // 2^(levels-1)
	convResample    bool
	attentionPoolHW int       // spatial size at the attention pool (image_size // ds)
	text            *textArch // GLIDE's text transformer (nil: none)
}

// defaultMult is create_model's / create_classifier's channel_mult for an
// image size; superRes uses sr_create_model's.
func defaultMult(size int, superRes bool) ([]float64, error) {
	if superRes {
		switch size {
		case 512, 256:
			return []float64{1, 1, 2, 2, 4, 4}, nil
		case 64:
			return []float64{1, 2, 3, 4}, nil
		}
		return nil, fmt.Errorf("image_size (large_size) %d: sr_create_model supports 64, 256 and 512", size)
	}
	switch size {
	case 512:
		return []float64{0.5, 1, 1, 2, 2, 4, 4}, nil
	case 256:
		return []float64{1, 1, 2, 2, 4, 4}, nil
	case 128:
		return []float64{1, 1, 2, 3, 4}, nil
	case 64:
		return []float64{1, 2, 3, 4}, nil
	}
	return nil, fmt.Errorf("image_size %d: without channel_mult, create_model supports 64, 128, 256 and 512", size)
}

// resolve checks c and derives the network's constructor arguments as
// create_model, sr_create_model and create_classifier do.
func (c Config) resolve() (arch, error) {
	a := arch{kind: c.Kind, size: c.ImageSize, in: 3, model: c.NumChannels, blocks: c.NumResBlocks,
		heads: c.NumHeads, headCh: c.NumHeadChannels, headsUp: c.NumHeadsUpsample, scaleShift: c.UseScaleShiftNorm,
		updown: c.ResblockUpdown, newOrder: c.UseNewAttentionOrder, dropout: c.Dropout, convResample: true}
	if c.ImageSize < 8 {
		return a, fmt.Errorf("adm: image_size %d: must be >= 8", c.ImageSize)
	}
	if c.NumChannels < 1 || c.NumResBlocks < 1 {
		return a, fmt.Errorf("adm: num_channels %d and num_res_blocks %d must be >= 1", c.NumChannels, c.NumResBlocks)
	}
	if !(c.Dropout >= 0 && c.Dropout < 1) {
		return a, fmt.Errorf("adm: dropout %v: must be in [0, 1)", c.Dropout)
	}
	img, classes := 3, NumClasses
	if c.InChannels != 0 {
		img = c.InChannels
	}
	if c.NumClasses != 0 {
		classes = c.NumClasses
	}
	if img < 1 || img > 64 {
		return a, fmt.Errorf("adm: in_channels %d: must be in 1..64", c.InChannels)
	}
	if classes < 1 || classes > 100000 {
		return a, fmt.Errorf("adm: num_classes %d: must be in 1..100000", c.NumClasses)
	}
	a.img, a.in = img, img
	var err error
	switch c.Kind {
	case UNet:
		a.out = img
		if c.LearnSigma {
			a.out = 2 * img
		}
		if c.ChannelMult == "" {
			a.mult, err = defaultMult(c.ImageSize, false)
		} else {
			a.mult, err = parseMult(c.ChannelMult)
		}
		if c.ClassCond {
			a.classes = classes
		}
	case SuperRes:
		a.in, a.out = 2*img, img
		if c.LearnSigma {
			a.out = 2 * img
		}
		// sr_create_model ignores channel_mult.
		a.mult, err = defaultMult(c.ImageSize, true)
		if c.ClassCond {
			a.classes = classes
		}
		if c.SmallSize < 1 || c.SmallSize > c.ImageSize {
			return a, fmt.Errorf("adm: small_size %d: must be in 1..large_size (%d)", c.SmallSize, c.ImageSize)
		}
	case Classifier:
		a.out = classes
		if c.ChannelMult == "" {
			a.mult, err = defaultMult(c.ImageSize, false)
		} else {
			a.mult, err = parseMult(c.ChannelMult)
		}
		a.heads, a.headCh, a.headsUp, a.newOrder = 1, 64, 1, false
		a.pool = c.Pool
		switch c.Pool {
		case "adaptive", "attention", "spatial", "spatial_v2":
		default:
			return a, fmt.Errorf("adm: pool (classifier_pool) %q: allowed are adaptive, attention, spatial, spatial_v2", c.Pool)
		}
	case Text2Im, InpaintText2Im, SuperResText2Im, SuperResInpaintText2Im:
		err = c.resolveText(&a)
	default:
		return a, fmt.Errorf("adm: _class_name %q: allowed are %s", c.Kind, kindList())
	}
	if err != nil {
		return a, fmt.Errorf("adm: %w", err)
	}
	if a.headsUp == -1 {
		a.headsUp = a.heads
	}
	a.levels = len(a.mult)
	a.finalDS = 1 << (a.levels - 1)
	a.timeEmbed = 4 * a.model
	if c.ImageSize%a.finalDS != 0 {
		return a, fmt.Errorf("adm: image_size %d: must be a multiple of %d for %d levels", c.ImageSize, a.finalDS, a.levels)
	}
	a.attentionPoolHW = c.ImageSize / a.finalDS
	for _, s := range strings.Split(c.AttentionResolutions, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		r, err := strconv.Atoi(s)
		if err != nil || r < 1 {
			return a, fmt.Errorf("adm: attention_resolutions %q: %q is not a positive integer", c.AttentionResolutions, s)
		}
		a.attnDS = append(a.attnDS, c.ImageSize/r)
	}
	if a.heads < 1 && a.headCh == -1 {
		return a, fmt.Errorf("adm: num_heads %d: must be >= 1 when num_head_channels is -1", a.heads)
	}
	if a.headCh != -1 && a.headCh < 1 {
		return a, fmt.Errorf("adm: num_head_channels %d: must be -1 or >= 1", a.headCh)
	}
	// Every channel count must split into GroupNorm32's 32 groups and the
	// attention heads.
	ds := 1
	for level, m := range a.mult {
		ch := int(m * float64(a.model))
		if ch < 1 || ch%32 != 0 {
			return a, fmt.Errorf("adm: channel_mult[%d] * num_channels = %d channels: GroupNorm32 needs a multiple of 32", level, ch)
		}
		if a.attention(ds) || level == a.levels-1 {
			for _, h := range []int{a.heads, a.headsUp} {
				if n := a.numHeads(ch, h); n < 1 || ch%n != 0 || (a.headCh != -1 && ch%a.headCh != 0) {
					return a, fmt.Errorf("adm: %d channels at level %d do not split into attention heads (num_heads %d, num_head_channels %d)", ch, level, h, a.headCh)
				}
			}
		}
		ds *= 2
	}
	return a, nil
}

// Validate reports the first flag outside its allowed range.
func (c Config) Validate() error {
	_, err := c.resolve()
	return err
}

// parseMult parses channel_mult "1,2,2" (fractions allowed, as 0.5).
func parseMult(s string) ([]float64, error) {
	var out []float64
	for _, p := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(v > 0) {
			return nil, fmt.Errorf("channel_mult %q: %q is not a positive number", s, p)
		}
		out = append(out, v)
	}
	return out, nil
}

// attention reports whether blocks at downsample rate ds have attention.
func (a arch) attention(ds int) bool { return slices.Contains(a.attnDS, ds) }

// numHeads is AttentionBlock's head count for ch channels.
func (a arch) numHeads(ch, heads int) int {
	if a.headCh == -1 {
		return heads
	}
	return ch / a.headCh
}

// presets are the flags the guided-diffusion README gives for each
// released checkpoint, by file name without ".pt".
var presets = map[string]string{
	"64x64_diffusion":          "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 --image_size 64 --learn_sigma True --noise_schedule cosine --num_channels 192 --num_head_channels 64 --num_res_blocks 3 --resblock_updown True --use_new_attention_order True --use_fp16 True --use_scale_shift_norm True",
	"128x128_diffusion":        "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 128 --learn_sigma True --noise_schedule linear --num_channels 256 --num_heads 4 --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
	"256x256_diffusion":        "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
	"256x256_diffusion_uncond": "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
	"512x512_diffusion":        "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 512 --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 False --use_scale_shift_norm True",
	"64_256_upsampler":         "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --large_size 256 --small_size 64 --learn_sigma True --noise_schedule linear --num_channels 192 --num_heads 4 --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
	"128_512_upsampler":        "--attention_resolutions 32,16 --class_cond True --diffusion_steps 1000 --large_size 512 --small_size 128 --learn_sigma True --noise_schedule linear --num_channels 192 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
	"lsun_bedroom":             lsunFlags + " --dropout 0.1",
	"lsun_cat":                 lsunFlags + " --dropout 0.1",
	"lsun_horse":               lsunFlags + " --dropout 0.1",
	"lsun_horse_nodropout":     lsunFlags + " --dropout 0.0",
	// Classifiers: classifier_defaults() with the README's flags (the
	// 64x64 sampling command sets --classifier_depth 4; the 128x128 ones
	// are its classifier training flags).
	"64x64_classifier":   "--image_size 64 --classifier_depth 4",
	"128x128_classifier": "--image_size 128 --classifier_depth 2 --classifier_width 128 --classifier_attention_resolutions 32,16,8 --classifier_pool attention --classifier_resblock_updown True --classifier_use_scale_shift_norm True --classifier_use_fp16 True",
	"256x256_classifier": "--image_size 256 --classifier_depth 2",
	"512x512_classifier": "--image_size 512 --classifier_depth 2",
}

const lsunFlags = "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True"

// Presets lists the released checkpoints Preset knows, sorted.
func Presets() []string {
	out := make([]string, 0, len(presets))
	for k := range presets {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Preset returns the config of a released checkpoint by its file name
// ("64x64_diffusion.pt", a path to it, or the name without ".pt"), with
// the flags guided-diffusion's README gives for it.
func Preset(name string) (Config, bool) {
	base := strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))
	flags, ok := presets[base]
	if !ok {
		return Config{}, false
	}
	c, err := ParseFlags(flags)
	if err != nil {
		panic(fmt.Sprintf("adm: preset %s: %v", base, err)) // the table above is wrong
	}
	return c, true
}
