package adm

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	G "gorgonia.org/gorgonia"

	"github.com/ddpm-go/ddpm/nn"
)

// GLIDE (Nichol et al. 2022, openai/glide-text2im): guided-diffusion's
// UNet (legacy attention head order) whose attention blocks also attend
// to the output of a text transformer, and whose timestep embedding gets
// the transformer's last token projected (text2im_model.py). The
// transformer (xf.py) is CLIP's: token, positional and padding
// embeddings, xf_layers pre-LayerNorm blocks of multi-head attention
// (no attention mask) and a GELU MLP, and an optional final LayerNorm.

// Vocab is the size of GLIDE's token vocabulary (GPT-2's BPE, package
// tokenizer): token_embedding has Vocab rows.
const Vocab = 50257

// layerNormEps is nn.LayerNorm's default eps, used by GLIDE's LayerNorm.
const layerNormEps = 1e-5

// TextConfig holds the flags of glide-text2im's
// model_and_diffusion_defaults that guided-diffusion does not have, under
// their names. Inpaint and SuperRes pick the network (Config.Kind).
type TextConfig struct {
	TextCtx      int  `json:"text_ctx"`       // tokens per prompt
	XFWidth      int  `json:"xf_width"`       // transformer width
	XFLayers     int  `json:"xf_layers"`      // transformer blocks
	XFHeads      int  `json:"xf_heads"`       // attention heads of the transformer
	XFFinalLN    bool `json:"xf_final_ln"`    // LayerNorm after the last block
	XFPadding    bool `json:"xf_padding"`     // padding_embedding where the mask is false
	CacheTextEmb bool `json:"cache_text_emb"` // a sampling cache; no effect on the network
	Inpaint      bool `json:"inpaint"`
	SuperRes     bool `json:"super_res"`
}

// textFlags are the flags only GLIDE has; any of them (without
// "_class_name") makes a flag set a GLIDE config.
var textFlags = []string{"text_ctx", "xf_width", "xf_layers", "xf_heads", "xf_final_ln", "xf_padding",
	"cache_text_emb", "inpaint", "super_res"}

// knownKind reports whether k is a network this package builds.
func knownKind(k Kind) bool {
	switch k {
	case UNet, SuperRes, Classifier, Text2Im, InpaintText2Im, SuperResText2Im, SuperResInpaintText2Im:
		return true
	}
	return false
}

// kindList names every Kind, for error messages.
func kindList() string {
	return strings.Join([]string{string(UNet), string(SuperRes), string(Classifier), string(Text2Im),
		string(InpaintText2Im), string(SuperResText2Im), string(SuperResInpaintText2Im)}, ", ")
}

// IsText reports whether k is one of GLIDE's text-conditional networks.
func (k Kind) IsText() bool {
	switch k {
	case Text2Im, InpaintText2Im, SuperResText2Im, SuperResInpaintText2Im:
		return true
	}
	return false
}

// glideKind is the network create_model picks for the inpaint and
// super_res flags.
func glideKind(inpaint, superRes bool) Kind {
	switch {
	case inpaint && superRes:
		return SuperResInpaintText2Im
	case inpaint:
		return InpaintText2Im
	case superRes:
		return SuperResText2Im
	}
	return Text2Im
}

// glideDefaults is glide-text2im's model_and_diffusion_defaults() for
// kind, with model_and_diffusion_defaults_upsampler()'s changes for the
// super-resolution kinds. GLIDE's models always output the variance
// interpolation too (out_channels 6), so LearnSigma is true.
func glideDefaults(kind Kind) Config {
	c := Config{Kind: kind, ImageSize: 64, NumChannels: 192, NumResBlocks: 3, NumHeads: 1, NumHeadChannels: 64,
		NumHeadsUpsample: -1, AttentionResolutions: "32,16,8", Dropout: 0.1, UseScaleShiftNorm: true,
		ResblockUpdown: true, UseFP16: true, LearnSigma: true, DiffusionSteps: 1000, NoiseSchedule: "squaredcos_cap_v2",
		TextConfig: &TextConfig{TextCtx: 128, XFWidth: 512, XFLayers: 16, XFHeads: 8, XFFinalLN: true, XFPadding: true}}
	c.Inpaint = kind == InpaintText2Im || kind == SuperResInpaintText2Im
	c.SuperRes = kind == SuperResText2Im || kind == SuperResInpaintText2Im
	if c.SuperRes {
		c.ImageSize, c.NumResBlocks, c.NoiseSchedule = 256, 2, "linear"
	}
	return c
}

// isGlideFlags reports whether any flag only GLIDE has is set.
func isGlideFlags(vals map[string]string) bool {
	for _, f := range textFlags {
		if _, ok := vals[f]; ok {
			return true
		}
	}
	return false
}

// setText assigns one of GLIDE's flags; ok is false for a name that is
// not one.
func (c *Config) setText(key, v string) (ok bool, err error) {
	if !slices.Contains(textFlags, key) {
		return false, nil
	}
	if c.TextConfig == nil {
		return true, fmt.Errorf("a GLIDE flag, but the config is a %s", c.Kind)
	}
	t := c.TextConfig
	switch key {
	case "text_ctx":
		t.TextCtx, err = parseInt(v)
	case "xf_width":
		t.XFWidth, err = parseInt(v)
	case "xf_layers":
		t.XFLayers, err = parseInt(v)
	case "xf_heads":
		t.XFHeads, err = parseInt(v)
	case "xf_final_ln":
		t.XFFinalLN, err = str2bool(v)
	case "xf_padding":
		t.XFPadding, err = str2bool(v)
	case "cache_text_emb":
		t.CacheTextEmb, err = str2bool(v)
	case "inpaint":
		t.Inpaint, err = str2bool(v)
	case "super_res":
		t.SuperRes, err = str2bool(v)
	}
	return true, err
}

// settleGlideKind sets a GLIDE config's kind from its inpaint and
// super_res flags; a "_class_name" among vals must agree with them.
func (c *Config) settleGlideKind(vals map[string]string) error {
	if c.TextConfig == nil {
		return nil
	}
	k := glideKind(c.Inpaint, c.SuperRes)
	if name, ok := vals["_class_name"]; ok && Kind(name) != k {
		return fmt.Errorf("adm: _class_name %s, but inpaint %v and super_res %v make a %s", name, c.Inpaint, c.SuperRes, k)
	}
	c.Kind = k
	return nil
}

// textArch is the resolved text transformer and input layout of a GLIDE
// network.
type textArch struct {
	ctx, width, layers, heads int
	finalLN, padding          bool
	inpaint, superRes         bool
}

// resolveText fills a for a GLIDE kind as glide-text2im's create_model
// does: in_channels 3 (+4 for inpainting, +3 for super-resolution),
// out_channels 6, the default channel_mult for 64, 128 and 256 (else
// channel_mult must give 2^(levels+2) = image_size), the legacy attention
// head order, no classes.
func (c Config) resolveText(a *arch) error {
	t := c.TextConfig
	if t == nil {
		return fmt.Errorf("a %s config needs GLIDE's text flags (text_ctx, xf_width, ...)", c.Kind)
	}
	if t.TextCtx < 1 {
		return fmt.Errorf("text_ctx %d: must be >= 1", t.TextCtx)
	}
	if t.XFWidth < 1 || t.XFHeads < 1 || t.XFWidth%t.XFHeads != 0 {
		return fmt.Errorf("xf_width %d and xf_heads %d: want positive values, xf_width a multiple of xf_heads (xf_width 0, no text, is not supported)", t.XFWidth, t.XFHeads)
	}
	if t.XFLayers < 0 {
		return fmt.Errorf("xf_layers %d: must be >= 0", t.XFLayers)
	}
	if c.ClassCond {
		return fmt.Errorf("class_cond: GLIDE's models are not class-conditional")
	}
	if c.InChannels != 0 && c.InChannels != 3 {
		return fmt.Errorf("in_channels %d: GLIDE's models take RGB images (3)", c.InChannels)
	}
	a.text = &textArch{ctx: t.TextCtx, width: t.XFWidth, layers: t.XFLayers, heads: t.XFHeads,
		finalLN: t.XFFinalLN, padding: t.XFPadding, inpaint: t.Inpaint, superRes: t.SuperRes}
	a.img, a.in, a.out, a.newOrder, a.classes = 3, 3, 6, false, 0
	if t.Inpaint {
		a.in += 4
	}
	if t.SuperRes {
		a.in += 3
	}
	if c.ChannelMult == "" {
		switch c.ImageSize {
		case 256:
			a.mult = []float64{1, 1, 2, 2, 4, 4}
		case 128:
			a.mult = []float64{1, 1, 2, 3, 4}
		case 64:
			a.mult = []float64{1, 2, 3, 4}
		default:
			return fmt.Errorf("image_size %d: without channel_mult, GLIDE's create_model supports 64, 128 and 256", c.ImageSize)
		}
		return nil
	}
	for _, p := range strings.Split(c.ChannelMult, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v < 1 {
			return fmt.Errorf("channel_mult %q: %q is not a positive integer", c.ChannelMult, p)
		}
		a.mult = append(a.mult, float64(v))
	}
	if 1<<(len(a.mult)+2) != c.ImageSize {
		return fmt.Errorf("channel_mult %q: GLIDE's create_model needs 2^(levels+2) = image_size (%d)", c.ChannelMult, c.ImageSize)
	}
	return nil
}

// The extra graph inputs of GLIDE's inpainting models: the known image
// times the mask and the mask, (N, 4, H, W), computed on the host.
const inputInpaint = "inpaint"

// buildText declares a GLIDE network (Text2ImUNet.forward and its
// subclasses') for shape k, reading the tokens from tok:
//
//	x' = cat(x, [inpaint_image * mask, mask], [upsampled low_res])
//	xf = final_ln(transformer(embeddings(tokens, mask)))      (N, T, W)
//	emb = time_embed(timestep_embedding(t)) + transformer_proj(xf[:, -1])
//	out = UNet(x', emb) with every AttentionBlock also attending to xf
func buildText[B any](a arch, b *nn.Builder[B], k nn.Key, tok *nn.Tokens) (*G.Node, error) {
	ta := a.text
	x := b.Input(inputX, k.N, 3, k.H, k.W)
	if ta.inpaint {
		x = b.Concat(x, b.Input(inputInpaint, k.N, 4, k.H, k.W))
	}
	if ta.superRes {
		x = b.Concat(x, b.Input(inputLowRes, k.N, 3, k.H, k.W))
	}
	emb := b.Linear("time_embed.0", b.Input(inputTEmb, k.N, a.model), a.timeEmbed)
	emb = b.Linear("time_embed.2", b.SiLU(emb), a.timeEmbed)
	xf := b.TextEmbedding("", tok, k.N, ta.ctx, Vocab, ta.width, ta.padding) // (N, T, W)
	for i := range ta.layers {
		xf = textBlock(b, fmt.Sprintf("transformer.resblocks.%d", i), xf, ta.heads)
	}
	if ta.finalLN {
		xf = b.LayerNorm("final_ln", xf, layerNormEps)
	}
	emb = b.Add(emb, b.Linear("transformer_proj", b.TokenAt(xf, ta.ctx-1), a.timeEmbed))
	u := &builder[B]{a: a, b: b, enc: b.Transpose(xf, k.N, ta.ctx, ta.width, k.N, ta.width, ta.ctx)} // (N, W, T)
	out := u.unet(x, b.SiLU(emb))
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("adm: build %s graph for batch %d at %dx%d: %w", a.kind, k.N, k.H, k.W, err)
	}
	return out, nil
}

// textBlock declares xf.py's ResidualAttentionBlock on x (N, T, W):
//
//	x = x + c_proj(attention(c_qkv(ln_1(x))))
//	x = x + mlp.c_proj(gelu(mlp.c_fc(ln_2(x))))
//
// The attention (QKVMultiheadAttention) splits each token's c_qkv output
// per head into [q, k, v]: transposed to (N, 3W, T) it is the legacy
// fused layout.
func textBlock[B any](b *nn.Builder[B], name string, x *G.Node, heads int) *G.Node {
	if b.Err() != nil {
		return nil
	}
	s := x.Shape()
	n, t, w := s[0], s[1], s[2]
	h := b.LayerNorm(name+".ln_1", x, layerNormEps)
	qkv := b.Linear(name+".attn.c_qkv", h, 3*w)  // (N, T, 3W)
	qkv = b.Transpose(qkv, n, t, 3*w, n, 3*w, t) // (N, 3W, T)
	h = b.QKVAttention(qkv, heads, true)         // (N, W, T)
	h = b.Linear(name+".attn.c_proj", b.Transpose(h, n, w, t, n, t, w), w)
	x = b.Add(x, h)
	h = b.LayerNorm(name+".ln_2", x, layerNormEps)
	h = b.GELU(b.Linear(name+".mlp.c_fc", h, 4*w))
	return b.Add(x, b.Linear(name+".mlp.c_proj", h, w))
}

// glidePresets are the released GLIDE checkpoints (glide-text2im's
// download.py names) with model_creation.py's defaults:
// model_and_diffusion_defaults() for base and base_inpaint,
// model_and_diffusion_defaults_upsampler() for upsample and
// upsample_inpaint.
var glidePresets = map[string]string{
	"base":             "--inpaint False --super_res False",
	"base_inpaint":     "--inpaint True --super_res False",
	"upsample":         "--inpaint False --super_res True" + upsamplerFlags,
	"upsample_inpaint": "--inpaint True --super_res True" + upsamplerFlags,
}

// upsamplerFlags are model_and_diffusion_defaults_upsampler()'s changes.
const upsamplerFlags = " --image_size 256 --num_res_blocks 2 --noise_schedule linear"

func init() {
	for k, v := range glidePresets {
		presets[k] = v
	}
}
