package adm

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/nn"
)

// The graph inputs: the image, the sinusoidal timestep embedding
// (computed on the host, see timestepEmbedding), the one-hot class labels
// of a class-conditional model, and a SuperRes model's low-resolution
// image already upsampled to the output size (bilinear, on the host).
const (
	inputX      = "x"       // (N, 3, H, W)
	inputTEmb   = "temb"    // (N, model_channels)
	inputClass  = "class"   // (N, NumClasses)
	inputLowRes = "low_res" // (N, 3, H, W)
)

// normGroups and normEps are GroupNorm32's: nn.GroupNorm(32, channels),
// PyTorch's default eps.
const (
	normGroups = 32
	normEps    = 1e-5
)

// builder holds the resolved architecture while declaring a graph; the
// parameter names are the modules' state_dict keys.
type builder[B any] struct {
	a   arch
	b   *nn.Builder[B]
	enc *G.Node // GLIDE's text encoder output (N, xf_width, text_ctx), or nil
}

// build declares the network of a on b for shape k and returns its
// output: (N, out_channels, H, W) for UNet and SuperRes (UNetModel.forward),
// (N, NumClasses) logits for Classifier (EncoderUNetModel.forward).
func build[B any](a arch, b *nn.Builder[B], k nn.Key) (*G.Node, error) {
	u := &builder[B]{a: a, b: b}
	x := b.Input(inputX, k.N, a.img, k.H, k.W)
	if a.kind == SuperRes {
		x = b.Concat(x, b.Input(inputLowRes, k.N, a.img, k.H, k.W))
	}
	// emb = time_embed(timestep_embedding(t)) (+ label_emb(y)).
	emb := b.Linear("time_embed.0", b.Input(inputTEmb, k.N, a.model), a.timeEmbed)
	emb = b.Linear("time_embed.2", b.SiLU(emb), a.timeEmbed)
	if a.classes > 0 {
		emb = b.Add(emb, b.Embed("label_emb.weight", b.Input(inputClass, k.N, a.classes), a.timeEmbed))
	}
	semb := b.SiLU(emb) // every ResBlock's emb_layers start with SiLU
	var out *G.Node
	if a.kind == Classifier {
		out = u.encoder(x, semb)
	} else {
		out = u.unet(x, semb)
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("adm: build %s graph for batch %d at %dx%d: %w", a.kind, k.N, k.H, k.W, err)
	}
	return out, nil
}

// inputBlocks declares input_blocks: the stem convolution, then per
// level num_res_blocks ResBlocks (each with an AttentionBlock at the
// attention rates), and a downsampling block between levels. It returns
// every block's output (the skips of the UNet, the features of the
// spatial pools) and the downsample rate at the bottom.
func (u *builder[B]) inputBlocks(x, semb *G.Node) ([]*G.Node, int) {
	b, a := u.b, u.a
	ch := int(a.mult[0] * float64(a.model))
	h := b.Conv("input_blocks.0.0", x, ch, 3, 1, 1)
	hs := []*G.Node{h}
	ds, idx := 1, 1
	for level, m := range a.mult {
		for range a.blocks {
			name := fmt.Sprintf("input_blocks.%d", idx)
			ch = int(m * float64(a.model))
			h = u.resBlock(name+".0", h, semb, ch, 0)
			if a.attention(ds) {
				h = u.attention(name+".1", h, a.heads)
			}
			hs = append(hs, h)
			idx++
		}
		if level != a.levels-1 {
			name := fmt.Sprintf("input_blocks.%d.0", idx)
			if a.updown {
				h = u.resBlock(name, h, semb, ch, -1)
			} else {
				h = u.downsample(name, h)
			}
			hs = append(hs, h)
			ds *= 2
			idx++
		}
	}
	return hs, ds
}

// middle declares middle_block: ResBlock, AttentionBlock, ResBlock.
func (u *builder[B]) middle(h, semb *G.Node) *G.Node {
	if u.b.Err() != nil {
		return nil
	}
	ch := h.Shape()[1]
	h = u.resBlock("middle_block.0", h, semb, ch, 0)
	h = u.attention("middle_block.1", h, u.a.heads)
	return u.resBlock("middle_block.2", h, semb, ch, 0)
}

// unet declares UNetModel's body after the embedding: input blocks,
// middle block, output blocks on the concatenated skips, then out
// (GroupNorm, SiLU, 3x3 convolution).
func (u *builder[B]) unet(x, semb *G.Node) *G.Node {
	b, a := u.b, u.a
	hs, ds := u.inputBlocks(x, semb)
	if b.Err() != nil {
		return nil
	}
	h := u.middle(hs[len(hs)-1], semb)
	idx := 0
	for level := a.levels - 1; level >= 0; level-- {
		ch := int(a.mult[level] * float64(a.model))
		for i := 0; i <= a.blocks; i++ {
			skip := hs[len(hs)-1]
			hs = hs[:len(hs)-1]
			name := fmt.Sprintf("output_blocks.%d", idx)
			h = u.resBlock(name+".0", b.Concat(h, skip), semb, ch, 0)
			j := 1
			if a.attention(ds) {
				h = u.attention(fmt.Sprintf("%s.%d", name, j), h, a.headsUp)
				j++
			}
			if level > 0 && i == a.blocks {
				sub := fmt.Sprintf("%s.%d", name, j)
				if a.updown {
					h = u.resBlock(sub, h, semb, ch, 1)
				} else {
					h = u.upsample(sub, h)
				}
				ds /= 2
			}
			idx++
		}
	}
	h = b.GroupNorm("out.0", h, normGroups, normEps, true)
	return b.Conv("out.2", h, a.out, 3, 1, 1)
}

// encoder declares EncoderUNetModel's body: input blocks, middle block
// and the pooling head (out), returning (N, NumClasses).
func (u *builder[B]) encoder(x, semb *G.Node) *G.Node {
	b, a := u.b, u.a
	hs, _ := u.inputBlocks(x, semb)
	if b.Err() != nil {
		return nil
	}
	h := u.middle(hs[len(hs)-1], semb)
	if b.Err() != nil {
		return nil
	}
	n, ch := h.Shape()[0], h.Shape()[1]
	switch a.pool {
	case "adaptive":
		// GroupNorm, SiLU, AdaptiveAvgPool2d((1, 1)), 1x1 conv, flatten.
		h = b.GroupNorm("out.0", h, normGroups, normEps, true)
		h = b.Reshape(b.ChannelMean(h), n, ch, 1, 1)
		h = b.Conv1x1("out.3", h, a.out, a.out, ch, 1, 1)
		return b.Reshape(h, n, a.out)
	case "attention":
		// GroupNorm, SiLU, AttentionPool2d: tokens [mean, positions] +
		// positional_embedding, qkv_proj, QKVAttention (new order),
		// c_proj, token 0. c_proj is per token, so it runs on token 0 only.
		h = b.GroupNorm("out.0", h, normGroups, normEps, true)
		tok := b.AttnPoolTokens("out.2.positional_embedding", h)
		qkv := b.Conv1x1("out.2.qkv_proj", tok, 3*ch, 3*ch, ch, 1)
		att := b.QKVAttention(qkv, ch/a.headCh, false)
		t := a.attentionPoolHW*a.attentionPoolHW + 1
		first := b.FirstToken(b.Transpose(att, n, ch, t, n, t, ch))
		out := b.Conv1x1("out.2.c_proj", b.Reshape(first, n, ch, 1), a.out, a.out, ch, 1)
		return b.Reshape(out, n, a.out)
	}
	// spatial, spatial_v2: the spatial means of every input block and of
	// the middle block, concatenated, then an MLP.
	feats := append(hs, h)
	var cat *G.Node
	for _, f := range feats {
		m := b.ChannelMean(f)
		if b.Err() != nil {
			return nil
		}
		m = b.Reshape(m, n, f.Shape()[1], 1, 1)
		if cat == nil {
			cat = m
		} else {
			cat = b.Concat(cat, m)
		}
	}
	if b.Err() != nil {
		return nil
	}
	z := b.Reshape(cat, n, cat.Shape()[1])
	z = b.Linear("out.0", z, 2048)
	if a.pool == "spatial" {
		return b.Linear("out.2", b.ReLU(z), a.out)
	}
	z = b.GroupNorm("out.1", z, normGroups, normEps, true)
	return b.Linear("out.3", z, a.out)
}

// resBlock declares ResBlock (out_channels cout; updown -1 downsamples
// and +1 upsamples both paths after in_layers' SiLU, resblock_updown):
//
//	h = in_layers.2(up/down(silu(in_layers.0(x))))
//	e = emb_layers.1(silu(emb))
//	scale-shift: h = silu(out_layers.0(h) * (1 + e[:C]) + e[C:])
//	else:        h = silu(out_layers.0(h + e))
//	h = out_layers.3(dropout(h));  out = skip_connection(up/down(x)) + h
func (u *builder[B]) resBlock(name string, x, semb *G.Node, cout, updown int) *G.Node {
	b, a := u.b, u.a
	if b.Err() != nil {
		return nil
	}
	var h *G.Node
	in := nn.Norm{Name: name + ".in_layers.0", Groups: normGroups, Eps: normEps, SiLU: true}
	conv1 := nn.ConvLayer{Name: name + ".in_layers.2", Out: cout, Kernel: 3, Stride: 1, Pad: 1}
	switch updown {
	case 0:
		h = b.NormConv(in, x, conv1)
	case -1, 1:
		h = b.GroupNorm(in.Name, x, normGroups, normEps, true)
		if updown < 0 {
			h, x = b.AvgPool2x(h), b.AvgPool2x(x)
		} else {
			h, x = b.Upsample2x(h), b.Upsample2x(x)
		}
		h = b.Conv(conv1.Name, h, cout, 3, 1, 1)
	}
	out := nn.Norm{Name: name + ".out_layers.0", Groups: normGroups, Eps: normEps, SiLU: true, Dropout: a.dropout}
	if a.scaleShift {
		out.ScaleShift = b.Linear(name+".emb_layers.1", semb, 2*cout)
	} else {
		out.Bias = b.Linear(name+".emb_layers.1", semb, cout)
	}
	if b.Err() != nil {
		return nil
	}
	if x.Shape()[1] != cout {
		x = b.Conv(name+".skip_connection", x, cout, 1, 1, 0)
	}
	return b.NormConv(out, h, nn.ConvLayer{Name: name + ".out_layers.3", Out: cout, Kernel: 3, Stride: 1, Pad: 1, Residual: x})
}

// attention declares AttentionBlock: norm, the fused qkv 1x1 convolution,
// QKVAttention (use_new_attention_order) or QKVAttentionLegacy, proj_out,
// plus the residual. In a GLIDE network (u.enc set) the keys and values
// of encoder_kv (a 1x1 convolution of the text) come before the block's
// own, as glide-text2im's QKVAttention(qkv, encoder_kv).
func (u *builder[B]) attention(name string, x *G.Node, heads int) *G.Node {
	b, a := u.b, u.a
	if b.Err() != nil {
		return nil
	}
	ch := x.Shape()[1]
	h := b.GroupNorm(name+".norm", x, normGroups, normEps, false)
	qkv := b.Conv1x1(name+".qkv", h, 3*ch, 3*ch, ch, 1)
	if u.enc != nil {
		// GLIDE: encoder_kv projects the text to per-head [k; v], attended
		// to before the block's own positions.
		e := u.enc.Shape()[1]
		ekv := b.Conv1x1(name+".encoder_kv", u.enc, 2*ch, 2*ch, e, 1)
		h = b.QKVAttentionKV(qkv, ekv, a.numHeads(ch, heads))
	} else {
		h = b.QKVAttention(qkv, a.numHeads(ch, heads), !a.newOrder)
	}
	h = b.Conv1x1(name+".proj_out", h, ch, ch, ch, 1)
	return b.Add(x, h)
}

// downsample is Downsample: a 3x3 stride-2 convolution padded 1 (op),
// or 2x2 average pooling without conv_resample.
func (u *builder[B]) downsample(name string, x *G.Node) *G.Node {
	b := u.b
	if b.Err() != nil {
		return nil
	}
	if !u.a.convResample {
		return b.AvgPool2x(x)
	}
	s := x.Shape()
	return b.ConvDims(name+".op", x, kernels.ConvDims{N: s[0], C: s[1], H: s[2], W: s[3], K: s[1], R: 3, S: 3,
		StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1})
}

// upsample is Upsample: nearest 2x, then a 3x3 convolution (conv) with
// conv_resample.
func (u *builder[B]) upsample(name string, x *G.Node) *G.Node {
	b := u.b
	if b.Err() != nil {
		return nil
	}
	h := b.Upsample2x(x)
	if !u.a.convResample {
		return h
	}
	return b.Conv(name+".conv", h, x.Shape()[1], 3, 1, 1)
}
