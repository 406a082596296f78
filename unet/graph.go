package unet

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/nn"
)

// The graph inputs: the image x_t, the sinusoidal timestep embedding
// (computed on the host, see timestepEmbedding) and, for a
// class-conditional model, the one-hot class labels.
const (
	inputX     = "x"     // (N, in_channels, H, W)
	inputTEmb  = "temb"  // (N, block_out_channels[0])
	inputClass = "class" // (N, num_class_embeds)
)

// build declares diffusers' UNet2DModel for cfg on b for the shape k
// (see the package doc for the architecture) and returns its output
// (N, out_channels, H, W).
func build[B any](cfg Config, b *nn.Builder[B], k nn.Key) (*G.Node, error) {
	u := &unetBuilder[B]{cfg: cfg, b: b}
	c0 := cfg.BlockOutChannels[0]
	x := b.Input(inputX, k.N, cfg.InChannels, k.H, k.W)
	temb := b.Input(inputTEmb, k.N, c0)

	// Time (and class) embedding: emb = linear_2(silu(linear_1(t_emb))) (+ class_embedding(y)).
	emb := b.Linear("time_embedding.linear_1", temb, 4*c0)
	emb = b.Linear("time_embedding.linear_2", b.SiLU(emb), 4*c0)
	if n := cfg.numClasses(); n > 0 {
		onehot := b.Input(inputClass, k.N, n)
		emb = b.Add(emb, b.Embed("class_embedding.weight", onehot, 4*c0))
	}
	semb := b.SiLU(emb) // every ResNet block projects silu(emb)
	h := b.Conv("conv_in", x, c0, 3, 1, 1)

	skips := []*G.Node{h}
	levels := len(cfg.BlockOutChannels)
	for i, ch := range cfg.BlockOutChannels {
		for j := 0; j < cfg.LayersPerBlock; j++ {
			h = u.resnet(fmt.Sprintf("down_blocks.%d.resnets.%d", i, j), h, semb, ch)
			if cfg.attentionAt(i) {
				h = u.attention(fmt.Sprintf("down_blocks.%d.attentions.%d", i, j), h, ch)
			}
			skips = append(skips, h)
		}
		if i < levels-1 {
			h = u.downsample(fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", i), h)
			skips = append(skips, h)
		}
	}
	last := cfg.BlockOutChannels[levels-1]
	h = u.resnet("mid_block.resnets.0", h, semb, last)
	if cfg.midAttention() {
		h = u.attention("mid_block.attentions.0", h, last)
	}
	h = u.resnet("mid_block.resnets.1", h, semb, last)
	for i := 0; i < levels; i++ {
		ch := cfg.BlockOutChannels[levels-1-i]
		for j := 0; j <= cfg.LayersPerBlock; j++ {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			h = u.resnet(fmt.Sprintf("up_blocks.%d.resnets.%d", i, j), b.Concat(h, skip), semb, ch)
			if cfg.UpBlockTypes[i] == "AttnUpBlock2D" {
				h = u.attention(fmt.Sprintf("up_blocks.%d.attentions.%d", i, j), h, ch)
			}
		}
		if i < levels-1 {
			h = b.Conv(fmt.Sprintf("up_blocks.%d.upsamplers.0.conv", i), b.Upsample2x(h), ch, 3, 1, 1)
		}
	}
	h = b.NormConv(nn.Norm{Name: "conv_norm_out", Groups: cfg.NormNumGroups, Eps: cfg.NormEps, SiLU: true}, h,
		nn.ConvLayer{Name: "conv_out", Out: cfg.OutChannels, Kernel: 3, Stride: 1, Pad: 1})
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("unet: build graph for batch %d at %dx%d: %w", k.N, k.H, k.W, err)
	}
	return h, nil
}

// unetBuilder holds the config while building the blocks.
type unetBuilder[B any] struct {
	cfg Config
	b   *nn.Builder[B]
}

func (u *unetBuilder[B]) norm(name string, x *G.Node, silu bool) *G.Node {
	return u.b.GroupNorm(name, x, u.cfg.NormNumGroups, u.cfg.NormEps, silu)
}

// downsample is Downsample2D: a 3x3 stride-2 convolution; downsample_padding
// 1 pads every side, 0 pads only the bottom and right (diffusers' F.pad
// (0, 1, 0, 1)).
func (u *unetBuilder[B]) downsample(name string, x *G.Node) *G.Node {
	if u.b.Err() != nil {
		return nil
	}
	s := x.Shape()
	p := u.cfg.DownsamplePadding
	return u.b.ConvDims(name, x, kernels.ConvDims{N: s[0], C: s[1], H: s[2], W: s[3], K: s[1], R: 3, S: 3, StrideH: 2, StrideW: 2,
		PadTop: p, PadLeft: p, PadBottom: 1, PadRight: 1})
}

// resnet is ResnetBlock2D: h = conv1(silu(norm1(x))) + time_emb_proj(semb);
// h = conv2(dropout(silu(norm2(h)))); out = shortcut(x) + h, with a 1x1
// conv_shortcut when the channel count changes.
func (u *unetBuilder[B]) resnet(name string, x, semb *G.Node, cout int) *G.Node {
	b := u.b
	if b.Err() != nil {
		return nil
	}
	g, eps := u.cfg.NormNumGroups, u.cfg.NormEps
	h := b.NormConv(nn.Norm{Name: name + ".norm1", Groups: g, Eps: eps, SiLU: true}, x, nn.ConvLayer{Name: name + ".conv1", Out: cout, Kernel: 3, Stride: 1, Pad: 1})
	temb := b.Linear(name+".time_emb_proj", semb, cout)
	sc := x
	if x.Shape()[1] != cout {
		sc = b.Conv(name+".conv_shortcut", x, cout, 1, 1, 0)
	}
	return b.NormConv(nn.Norm{Name: name + ".norm2", Groups: g, Eps: eps, SiLU: true, Bias: temb, Dropout: u.cfg.Dropout}, h,
		nn.ConvLayer{Name: name + ".conv2", Out: cout, Kernel: 3, Stride: 1, Pad: 1, Residual: sc})
}

// attention is diffusers' Attention on a feature map: group_norm, tokens
// (N, HW, C), q/k/v projections, softmax(q k^T / sqrt(d)) v per head,
// to_out.0, back to (N, C, H, W), plus the residual.
func (u *unetBuilder[B]) attention(name string, x *G.Node, ch int) *G.Node {
	b := u.b
	if b.Err() != nil {
		return nil
	}
	s := x.Shape()
	n, c, hw := s[0], s[1], s[2]*s[3]
	tok := b.NormTokens(nn.Norm{Name: name + ".group_norm", Groups: u.cfg.NormNumGroups, Eps: u.cfg.NormEps}, x)
	q := b.Linear(name+".to_q", tok, c)
	k := b.Linear(name+".to_k", tok, c)
	v := b.Linear(name+".to_v", tok, c)
	heads, dim := u.cfg.heads(ch)
	a := b.Attention(q, k, v, kernels.AttnDims{B: n, T: hw, Heads: heads, HeadDim: dim, Scale: float32(1 / math.Sqrt(float64(dim)))})
	return b.LinearToMap(name+".to_out.0", a, c, x)
}
