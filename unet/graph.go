package unet

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/ddpm-go/ddpm/kernels"
)

// builder builds one graph of the UNet; it creates parameters the first
// time a name is seen (while the model is being constructed).
type builder struct {
	m   *Model
	gr  *graph
	err error
}

// maxGraphs is how many built graphs (input shapes) a Model keeps.
const maxGraphs = 6

// graphFor returns the graph for key, building it on first use.
func (m *Model) graphFor(key graphKey) (*graph, error) {
	m.uses++
	if gr, ok := m.graphs[key]; ok {
		gr.lastUse = m.uses
		return gr, nil
	}
	gr, err := m.build(key)
	if err != nil {
		return nil, err
	}
	// Each graph keeps every activation of its shape, so only the most
	// recently used maxGraphs are kept (a server sees many batch sizes).
	for len(m.graphs) >= maxGraphs {
		var oldest graphKey
		first := true
		for k, g := range m.graphs {
			if first || g.lastUse < m.graphs[oldest].lastUse {
				oldest, first = k, false
			}
		}
		m.graphs[oldest].vm.Close()
		delete(m.graphs, oldest)
	}
	gr.lastUse = m.uses
	m.graphs[key] = gr
	return gr, nil
}

func (m *Model) build(key graphKey) (*graph, error) {
	c := m.cfg
	c0 := c.BlockOutChannels[0]
	gr := &graph{g: G.NewGraph(), nodeOf: map[string]*G.Node{}}
	b := &builder{m: m, gr: gr}
	gr.x = tensor.New(tensor.WithShape(key.n, c.InChannels, key.h, key.w), tensor.Of(tensor.Float32))
	gr.temb = tensor.New(tensor.WithShape(key.n, c0), tensor.Of(tensor.Float32))
	x := G.NewTensor(gr.g, tensor.Float32, 4, G.WithName("x"), G.WithValue(gr.x))
	temb := G.NewMatrix(gr.g, tensor.Float32, G.WithName("t_emb"), G.WithValue(gr.temb))
	gr.xNode, gr.tembNode = x, temb

	// Time (and class) embedding: emb = linear_2(silu(linear_1(t_emb))) (+ class_embedding(y)).
	emb := b.linear("time_embedding.linear_1", temb, 4*c0)
	emb = b.silu(emb)
	emb = b.linear("time_embedding.linear_2", emb, 4*c0)
	if k := c.numClasses(); k > 0 {
		gr.classes = k
		gr.onehot = tensor.New(tensor.WithShape(key.n, k), tensor.Of(tensor.Float32))
		oh := G.NewMatrix(gr.g, tensor.Float32, G.WithName("class_onehot"), G.WithValue(gr.onehot))
		gr.ohNode = oh
		table := b.param("class_embedding.weight", tensor.Shape{k, 4 * c0}, 0, 'n')
		if b.err == nil {
			ce, err := apply(newEmbed(m.cpu, key.n, k, 4*c0), oh, table)
			b.fail(err)
			emb = b.add(emb, ce)
		}
	}
	semb := b.silu(emb) // every ResNet block projects silu(emb)
	h := b.conv("conv_in", x, c0, 3, 1, 1)

	skips := []*G.Node{h}
	levels := len(c.BlockOutChannels)
	for i, ch := range c.BlockOutChannels {
		for j := 0; j < c.LayersPerBlock; j++ {
			h = b.resnet(fmt.Sprintf("down_blocks.%d.resnets.%d", i, j), h, semb, ch, key.train)
			if c.attentionAt(i) {
				h = b.attention(fmt.Sprintf("down_blocks.%d.attentions.%d", i, j), h, ch)
			}
			skips = append(skips, h)
		}
		if i < levels-1 {
			h = b.downsample(fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", i), h)
			skips = append(skips, h)
		}
	}
	last := c.BlockOutChannels[levels-1]
	h = b.resnet("mid_block.resnets.0", h, semb, last, key.train)
	if c.midAttention() {
		h = b.attention("mid_block.attentions.0", h, last)
	}
	h = b.resnet("mid_block.resnets.1", h, semb, last, key.train)
	for i := 0; i < levels; i++ {
		ch := c.BlockOutChannels[levels-1-i]
		for j := 0; j <= c.LayersPerBlock; j++ {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			h = b.concat(h, skip)
			h = b.resnet(fmt.Sprintf("up_blocks.%d.resnets.%d", i, j), h, semb, ch, key.train)
			if c.UpBlockTypes[i] == "AttnUpBlock2D" {
				h = b.attention(fmt.Sprintf("up_blocks.%d.attentions.%d", i, j), h, ch)
			}
		}
		if i < levels-1 {
			h = b.upsample(fmt.Sprintf("up_blocks.%d.upsamplers.0.conv", i), h)
		}
	}
	h = b.norm("conv_norm_out", h, true)
	h = b.conv("conv_out", h, c.OutChannels, 3, 1, 1)
	if b.err != nil {
		return nil, fmt.Errorf("unet: build graph for batch %d at %dx%d: %w", key.n, key.h, key.w, b.err)
	}
	gr.out = h
	for _, p := range m.params {
		gr.paramNodes = append(gr.paramNodes, gr.nodeOf[p.name])
	}

	if key.train {
		gr.loss = &ExternalLoss{opBase: newBase("ExternalLoss", nil, 1, m.cpu), Fn: &gr.lossFn}
		lossNode, err := apply(gr.loss, h)
		if err != nil {
			return nil, fmt.Errorf("unet: loss node: %w", err)
		}
		gr.lossNode = lossNode
		grads, err := G.Grad(lossNode, gr.paramNodes...)
		if err != nil {
			return nil, fmt.Errorf("unet: gradients: %w", err)
		}
		gr.gradNodes = grads
	}
	gr.vm = G.NewTapeMachine(gr.g)
	return gr, nil
}

func (b *builder) fail(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

// param returns the graph node of a parameter, creating the parameter
// (initialised by kind: 'w' uniform +-1/sqrt(fanIn), 'b' the same bound,
// '1' ones, '0' zeros, 'n' standard normal) when the model is being built.
func (b *builder) param(name string, shape tensor.Shape, fanIn int, kind byte) *G.Node {
	if b.err != nil {
		return nil
	}
	m := b.m
	p, ok := m.byName[name]
	if !ok {
		if m.init == nil {
			b.fail(fmt.Errorf("parameter %s %v is not part of the model", name, shape))
			return nil
		}
		t := tensor.New(tensor.WithShape(shape.Clone()...), tensor.Of(tensor.Float32))
		data := t.Data().([]float32)
		bound := 1 / math.Sqrt(float64(max(fanIn, 1)))
		for i := range data {
			switch kind {
			case 'w', 'b':
				data[i] = float32((2*m.init.Float64() - 1) * bound)
			case '1':
				data[i] = 1
			case 'n':
				data[i] = float32(m.init.NormFloat64())
			}
		}
		p = &param{name: name, shape: shape.Clone(), t: t}
		m.params = append(m.params, p)
		m.byName[name] = p
	} else if !p.shape.Eq(shape) {
		b.fail(fmt.Errorf("parameter %s has shape %v, the graph needs %v", name, p.shape, shape))
		return nil
	}
	n := G.NewTensor(b.gr.g, tensor.Float32, len(shape), G.WithShape(shape.Clone()...), G.WithName(name), G.WithValue(p.t))
	b.gr.nodeOf[name] = n
	return n
}

func (b *builder) op(op G.Op, in ...*G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	n, err := apply(op, in...)
	b.fail(err)
	return n
}

// conv is a k x k convolution with bias (name.weight, name.bias) from x's
// channels to cout; pad is the padding on every side.
func (b *builder) conv(name string, x *G.Node, cout, k, stride, pad int) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	d := kernels.ConvDims{N: s[0], C: s[1], H: s[2], W: s[3], K: cout, R: k, S: k, StrideH: stride, StrideW: stride,
		PadTop: pad, PadLeft: pad, PadBottom: pad, PadRight: pad}
	return b.convDims(name, x, d)
}

func (b *builder) convDims(name string, x *G.Node, d kernels.ConvDims) *G.Node {
	fan := d.C * d.R * d.S
	w := b.param(name+".weight", tensor.Shape{d.K, d.C, d.R, d.S}, fan, 'w')
	bias := b.param(name+".bias", tensor.Shape{d.K}, fan, 'b')
	return b.op(newConv2D(b.m.cpu, d), x, w, bias)
}

// downsample is Downsample2D: a 3x3 stride-2 convolution; downsample_padding
// 1 pads every side, 0 pads only the bottom and right (diffusers' F.pad
// (0, 1, 0, 1)).
func (b *builder) downsample(name string, x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	p := b.m.cfg.DownsamplePadding
	d := kernels.ConvDims{N: s[0], C: s[1], H: s[2], W: s[3], K: s[1], R: 3, S: 3, StrideH: 2, StrideW: 2,
		PadTop: p, PadLeft: p, PadBottom: 1, PadRight: 1}
	return b.convDims(name, x, d)
}

// upsample is Upsample2D: nearest 2x, then a 3x3 convolution.
func (b *builder) upsample(name string, x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	u := b.op(newUpsample2x(b.m.cpu, x.Shape()), x)
	if u == nil {
		return nil
	}
	return b.conv(name, u, x.Shape()[1], 3, 1, 1)
}

func (b *builder) linear(name string, x *G.Node, out int) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	in := s[len(s)-1]
	w := b.param(name+".weight", tensor.Shape{out, in}, in, 'w')
	bias := b.param(name+".bias", tensor.Shape{out}, in, 'b')
	return b.op(newLinear(b.m.cpu, s, out), x, w, bias)
}

func (b *builder) norm(name string, x *G.Node, silu bool) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	gamma := b.param(name+".weight", tensor.Shape{s[1]}, 0, '1')
	beta := b.param(name+".bias", tensor.Shape{s[1]}, 0, '0')
	return b.op(newGroupNorm(b.m.cpu, s, b.m.cfg.NormNumGroups, float32(b.m.cfg.NormEps), silu), x, gamma, beta)
}

func (b *builder) silu(x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.op(newSiLU(b.m.cpu, x.Shape()), x)
}

func (b *builder) add(x, y *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.op(newAdd(b.m.cpu, x.Shape()), x, y)
}

func (b *builder) concat(x, y *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.op(newConcat(b.m.cpu, x.Shape(), y.Shape()), x, y)
}

// resnet is ResnetBlock2D: h = conv1(silu(norm1(x))) + time_emb_proj(semb);
// h = conv2(dropout(silu(norm2(h)))); out = shortcut(x) + h, with a 1x1
// conv_shortcut when the channel count changes.
func (b *builder) resnet(name string, x, semb *G.Node, cout int, train bool) *G.Node {
	if b.err != nil {
		return nil
	}
	cin := x.Shape()[1]
	h := b.norm(name+".norm1", x, true)
	h = b.conv(name+".conv1", h, cout, 3, 1, 1)
	tp := b.linear(name+".time_emb_proj", semb, cout)
	if b.err != nil {
		return nil
	}
	h = b.op(newAddChannelBias(b.m.cpu, h.Shape()), h, tp)
	h = b.norm(name+".norm2", h, true)
	if train && b.m.cfg.Dropout > 0 && b.err == nil {
		mt := tensor.New(tensor.WithShape(h.Shape().Clone()...), tensor.Of(tensor.Float32))
		mask := mt.Data().([]float32)
		b.gr.dropMasks = append(b.gr.dropMasks, &mask)
		mn := G.NewTensor(b.gr.g, tensor.Float32, h.Dims(), G.WithName(fmt.Sprintf("dropout_mask.%s", name)), G.WithValue(mt))
		b.gr.dropNodes = append(b.gr.dropNodes, mn)
		h = b.op(&Dropout{newBase(fmt.Sprintf("Dropout%v#%d", h.Shape(), len(b.gr.dropMasks)), h.Shape().Clone(), 2, b.m.cpu)}, h, mn)
	}
	h = b.conv(name+".conv2", h, cout, 3, 1, 1)
	sc := x
	if cin != cout {
		sc = b.conv(name+".conv_shortcut", x, cout, 1, 1, 0)
	}
	return b.add(sc, h)
}

// attention is diffusers' Attention on a feature map: group_norm, tokens
// (N, HW, C), q/k/v projections, softmax(q k^T / sqrt(d)) v per head,
// to_out.0, back to (N, C, H, W), plus the residual.
func (b *builder) attention(name string, x *G.Node, ch int) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	n, c, hw := s[0], s[1], s[2]*s[3]
	h := b.norm(name+".group_norm", x, false)
	tok := b.op(newTranspose(b.m.cpu, n, c, hw, tensor.Shape{n, hw, c}), h)
	q := b.linear(name+".to_q", tok, c)
	k := b.linear(name+".to_k", tok, c)
	v := b.linear(name+".to_v", tok, c)
	heads, dim := b.m.cfg.heads(ch)
	d := kernels.AttnDims{B: n, T: hw, Heads: heads, HeadDim: dim, Scale: float32(1 / math.Sqrt(float64(dim)))}
	a := b.op(newAttention(b.m.cpu, tensor.Shape{n, hw, c}, d), q, k, v)
	o := b.linear(name+".to_out.0", a, c)
	back := b.op(newTranspose(b.m.cpu, n, hw, c, s), o)
	return b.add(back, x)
}
