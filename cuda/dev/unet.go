package dev

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/ddpm-go/ddpm/kernels"
)

// UNetConfig is the subset of diffusers' UNet2DModel configuration the lab
// UNet needs: DownBlock2D/AttnDownBlock2D and their up mirrors, ResNet
// blocks with a time embedding, one-head attention, GroupNorm+SiLU.
type UNetConfig struct {
	InChannels int     // image channels (3)
	Channels   []int   // block_out_channels, e.g. 128, 256, 256, 256
	Attention  []bool  // per down level: AttnDownBlock2D (the up path mirrors it)
	Layers     int     // layers_per_block
	Groups     int     // norm_num_groups
	Eps        float32 // norm_eps
	DownPad    int     // downsample_padding: 1 pads all sides, 0 pads only bottom and right
}

// CIFAR10 is google/ddpm-cifar10-32's UNet: 35,746,307 parameters.
func CIFAR10() UNetConfig {
	return UNetConfig{InChannels: 3, Channels: []int{128, 256, 256, 256},
		Attention: []bool{false, true, false, false}, Layers: 2, Groups: 32, Eps: 1e-6, DownPad: 0}
}

// UNet is a forward-only UNet2DModel written directly on kernels.Ops, for
// timing and checking a backend on a whole network (sampling) while the
// Gorgonia UNet runs through package gexec elsewhere. Parameters are
// seeded random values under diffusers' names.
type UNet[B any] struct {
	ops    kernels.Ops[B]
	cfg    UNetConfig
	params map[string]B
	sizes  map[string]int
	order  []string
}

// NewUNet creates the parameters (uniform in +-1/sqrt(fan-in), biases and
// norm shifts small, norm scales near 1) on ops.
func NewUNet[B any](ops kernels.Ops[B], cfg UNetConfig, seed uint64) (*UNet[B], error) {
	if len(cfg.Channels) == 0 || len(cfg.Attention) != len(cfg.Channels) || cfg.Layers < 1 || cfg.Groups < 1 {
		return nil, fmt.Errorf("dev: UNetConfig %+v: need Channels, one Attention flag per level, Layers >= 1, Groups >= 1", cfg)
	}
	for _, c := range cfg.Channels {
		if c%cfg.Groups != 0 {
			return nil, fmt.Errorf("dev: UNetConfig: channels %d not divisible by Groups %d", c, cfg.Groups)
		}
	}
	u := &UNet[B]{ops: ops, cfg: cfg, params: map[string]B{}, sizes: map[string]int{}}
	r := rand.New(rand.NewPCG(seed, 0x756e6574))
	add := func(name string, n, fanIn int, kind byte) {
		v := make([]float32, n)
		s := float32(1 / math.Sqrt(float64(max(fanIn, 1))))
		for i := range v {
			switch kind {
			case 'w':
				v[i] = s * (2*r.Float32() - 1)
			case 'g':
				v[i] = 1 + 0.1*(2*r.Float32()-1)
			default:
				v[i] = 0.05 * (2*r.Float32() - 1)
			}
		}
		b := ops.Alloc(n)
		ops.Upload(b, v)
		u.params[name], u.sizes[name] = b, n
		u.order = append(u.order, name)
	}
	conv := func(name string, cin, cout, k int) {
		add(name+".weight", cout*cin*k*k, cin*k*k, 'w')
		add(name+".bias", cout, cin*k*k, 'b')
	}
	lin := func(name string, in, out int) {
		add(name+".weight", out*in, in, 'w')
		add(name+".bias", out, in, 'b')
	}
	norm := func(name string, c int) {
		add(name+".weight", c, 1, 'g')
		add(name+".bias", c, 1, 'b')
	}
	ch0, temb := cfg.Channels[0], 4*cfg.Channels[0]
	resnet := func(name string, cin, cout int) {
		norm(name+".norm1", cin)
		conv(name+".conv1", cin, cout, 3)
		lin(name+".time_emb_proj", temb, cout)
		norm(name+".norm2", cout)
		conv(name+".conv2", cout, cout, 3)
		if cin != cout {
			conv(name+".conv_shortcut", cin, cout, 1)
		}
	}
	attn := func(name string, c int) {
		norm(name+".group_norm", c)
		for _, p := range []string{"to_q", "to_k", "to_v", "to_out.0"} {
			lin(name+"."+p, c, c)
		}
	}
	lin("time_embedding.linear_1", ch0, temb)
	lin("time_embedding.linear_2", temb, temb)
	conv("conv_in", cfg.InChannels, ch0, 3)
	out := ch0
	for i, c := range cfg.Channels {
		in := out
		out = c
		for j := 0; j < cfg.Layers; j++ {
			resnet(fmt.Sprintf("down_blocks.%d.resnets.%d", i, j), map[bool]int{true: in, false: out}[j == 0], out)
			if cfg.Attention[i] {
				attn(fmt.Sprintf("down_blocks.%d.attentions.%d", i, j), out)
			}
		}
		if i < len(cfg.Channels)-1 {
			conv(fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", i), out, out, 3)
		}
	}
	last := cfg.Channels[len(cfg.Channels)-1]
	resnet("mid_block.resnets.0", last, last)
	attn("mid_block.attentions.0", last)
	resnet("mid_block.resnets.1", last, last)
	rev := slices.Clone(cfg.Channels)
	slices.Reverse(rev)
	prev := last
	for i, c := range rev {
		level := len(rev) - 1 - i
		inCh := cfg.Channels[max(level-1, 0)]
		for j := 0; j <= cfg.Layers; j++ {
			skip := inCh
			if j < cfg.Layers {
				skip = c
			}
			rin := c
			if j == 0 {
				rin = prev
			}
			resnet(fmt.Sprintf("up_blocks.%d.resnets.%d", i, j), rin+skip, c)
			if cfg.Attention[level] {
				attn(fmt.Sprintf("up_blocks.%d.attentions.%d", i, j), c)
			}
		}
		if i < len(rev)-1 {
			conv(fmt.Sprintf("up_blocks.%d.upsamplers.0.conv", i), c, c, 3)
		}
		prev = c
	}
	norm("conv_norm_out", ch0)
	conv("conv_out", ch0, cfg.InChannels, 3)
	if err := ops.Sync(); err != nil {
		return nil, err
	}
	return u, nil
}

// Load replaces the parameters with named values (diffusers state_dict
// names, e.g. from weights.Open); every parameter must be given with its
// exact size, and unknown names are an error.
func (u *UNet[B]) Load(tensors map[string][]float32) error {
	var bad []string
	for name, v := range tensors {
		n, ok := u.sizes[name]
		switch {
		case !ok:
			bad = append(bad, "unexpected "+name)
		case n != len(v):
			bad = append(bad, fmt.Sprintf("%s has %d values, want %d", name, len(v), n))
		}
	}
	for _, name := range u.order {
		if _, ok := tensors[name]; !ok {
			bad = append(bad, "missing "+name)
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("dev: UNet.Load: %s", strings.Join(bad, "; "))
	}
	for name, v := range tensors {
		u.ops.Upload(u.params[name], v)
	}
	return u.ops.Sync()
}

// NumParams is the number of parameters.
func (u *UNet[B]) NumParams() int {
	n := 0
	for _, s := range u.sizes {
		n += s
	}
	return n
}

// Close frees the parameters.
func (u *UNet[B]) Close() {
	for _, b := range u.params {
		u.ops.Free(b)
	}
	u.params = map[string]B{}
}

// act is an activation buffer with its shape (N, C, H, W).
type act[B any] struct {
	b          B
	c, h, w, n int
}

func (u *UNet[B]) alloc(n, c, h, w int) act[B] {
	return act[B]{b: u.uninit(n * c * h * w), n: n, c: c, h: h, w: w}
}

// uninit allocates a buffer that will be fully overwritten: without the
// zeroing pass when the backend offers that (cuda.Device.AllocUninit).
func (u *UNet[B]) uninit(n int) B {
	if a, ok := u.ops.(interface{ AllocUninit(int) B }); ok {
		return a.AllocUninit(n)
	}
	return u.ops.Alloc(n)
}

func (u *UNet[B]) free(a act[B]) { u.ops.Free(a.b) }

func (u *UNet[B]) p(name string) B { return u.params[name] }

func (u *UNet[B]) conv(name string, x act[B], cout, k, stride int) act[B] {
	pad := k / 2
	d := kernels.ConvDims{N: x.n, C: x.c, H: x.h, W: x.w, K: cout, R: k, S: k, StrideH: stride, StrideW: stride,
		PadTop: pad, PadLeft: pad, PadBottom: pad, PadRight: pad}
	if stride == 2 && u.cfg.DownPad == 0 { // diffusers Downsample2D(padding=0): F.pad(x, (0, 1, 0, 1))
		d.PadTop, d.PadLeft = 0, 0
	}
	y := u.alloc(x.n, cout, d.OutH(), d.OutW())
	u.ops.Conv2D(y.b, x.b, u.p(name+".weight"), u.p(name+".bias"), d)
	return y
}

func (u *UNet[B]) norm(name string, x act[B], silu bool) act[B] {
	y := u.alloc(x.n, x.c, x.h, x.w)
	ng := x.n * u.cfg.Groups
	m, r := u.ops.Alloc(ng), u.ops.Alloc(ng)
	u.ops.GroupNorm(y.b, m, r, x.b, u.p(name+".weight"), u.p(name+".bias"),
		kernels.GroupNormDims{N: x.n, C: x.c, HW: x.h * x.w, Groups: u.cfg.Groups, Eps: u.cfg.Eps, SiLU: silu})
	u.ops.Free(m)
	u.ops.Free(r)
	return y
}

// resnet is diffusers' ResnetBlock2D: x + conv2(GN+SiLU(conv1(GN+SiLU(x)) + proj(silu(temb)))),
// with a 1x1 shortcut when the channels change.
func (u *UNet[B]) resnet(name string, x act[B], stemb B, cout int) act[B] {
	h1 := u.norm(name+".norm1", x, true)
	h2 := u.conv(name+".conv1", h1, cout, 3, 1)
	u.free(h1)
	temb := 4 * u.cfg.Channels[0]
	proj := u.ops.Alloc(x.n * cout)
	u.ops.Linear(proj, stemb, u.p(name+".time_emb_proj.weight"), u.p(name+".time_emb_proj.bias"), x.n, temb, cout)
	u.ops.AddChannelBias(h2.b, h2.b, proj, x.n, cout, h2.h*h2.w)
	u.ops.Free(proj)
	h3 := u.norm(name+".norm2", h2, true)
	u.free(h2)
	out := u.conv(name+".conv2", h3, cout, 3, 1)
	u.free(h3)
	if x.c != cout {
		sc := u.conv(name+".conv_shortcut", x, cout, 1, 1)
		u.ops.Add(out.b, out.b, sc.b, out.n*out.c*out.h*out.w)
		u.free(sc)
	} else {
		u.ops.Add(out.b, out.b, x.b, out.n*out.c*out.h*out.w)
	}
	return out
}

// attention is diffusers' one-head Attention block with GroupNorm and a residual.
func (u *UNet[B]) attention(name string, x act[B]) act[B] {
	n, c, hw := x.n, x.c, x.h*x.w
	hn := u.norm(name+".group_norm", x, false)
	tok := u.ops.Alloc(n * hw * c)
	u.ops.Transpose12(tok, hn.b, n, c, hw)
	u.free(hn)
	q, k, v := u.ops.Alloc(n*hw*c), u.ops.Alloc(n*hw*c), u.ops.Alloc(n*hw*c)
	u.ops.Linear(q, tok, u.p(name+".to_q.weight"), u.p(name+".to_q.bias"), n*hw, c, c)
	u.ops.Linear(k, tok, u.p(name+".to_k.weight"), u.p(name+".to_k.bias"), n*hw, c, c)
	u.ops.Linear(v, tok, u.p(name+".to_v.weight"), u.p(name+".to_v.bias"), n*hw, c, c)
	u.ops.Attention(tok, q, k, v, kernels.AttnDims{B: n, T: hw, Heads: 1, HeadDim: c, Scale: float32(1 / math.Sqrt(float64(c)))})
	u.ops.Linear(q, tok, u.p(name+".to_out.0.weight"), u.p(name+".to_out.0.bias"), n*hw, c, c)
	out := u.alloc(n, c, x.h, x.w)
	u.ops.Transpose12(out.b, q, n, hw, c)
	u.ops.Add(out.b, out.b, x.b, n*c*hw)
	for _, b := range []B{tok, q, k, v} {
		u.ops.Free(b)
	}
	return out
}

// timestepEmbedding is diffusers' get_timestep_embedding with
// flip_sin_to_cos false and downscale_freq_shift 1: [sin, cos] of
// t * exp(-ln(10000) i / (half - 1)).
func timestepEmbedding(t []int, dim int) []float32 {
	half := dim / 2
	out := make([]float32, len(t)*dim)
	for b, tt := range t {
		for i := 0; i < half; i++ {
			f := math.Exp(-math.Log(10000) * float64(i) / float64(half-1))
			a := float64(tt) * f
			out[b*dim+i] = float32(math.Sin(a))
			out[b*dim+half+i] = float32(math.Cos(a))
		}
	}
	return out
}

// Forward writes the predicted noise eps (N, C, H, W) for x_t (N, C, H, W)
// at timesteps t (0-indexed, one per image) into out.
func (u *UNet[B]) Forward(out, x B, t []int, h, w int) {
	cfg := u.cfg
	n, ch0, temb := len(t), cfg.Channels[0], 4*cfg.Channels[0]
	tp := u.ops.Alloc(n * ch0)
	u.ops.Upload(tp, timestepEmbedding(t, ch0))
	e1, e2 := u.ops.Alloc(n*temb), u.ops.Alloc(n*temb)
	u.ops.Linear(e1, tp, u.p("time_embedding.linear_1.weight"), u.p("time_embedding.linear_1.bias"), n, ch0, temb)
	u.ops.SiLU(e1, e1, n*temb)
	u.ops.Linear(e2, e1, u.p("time_embedding.linear_2.weight"), u.p("time_embedding.linear_2.bias"), n, temb, temb)
	u.ops.SiLU(e1, e2, n*temb) // every ResNet block uses silu(temb)
	stemb := e1

	in := act[B]{b: x, n: n, c: cfg.InChannels, h: h, w: w}
	cur := u.conv("conv_in", in, ch0, 3, 1)
	skips := []act[B]{cur}
	for i, c := range cfg.Channels {
		for j := 0; j < cfg.Layers; j++ {
			nx := u.resnet(fmt.Sprintf("down_blocks.%d.resnets.%d", i, j), cur, stemb, c)
			if cfg.Attention[i] {
				a := u.attention(fmt.Sprintf("down_blocks.%d.attentions.%d", i, j), nx)
				u.free(nx)
				nx = a
			}
			cur = nx
			skips = append(skips, cur)
		}
		if i < len(cfg.Channels)-1 {
			cur = u.conv(fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", i), cur, c, 3, 2)
			skips = append(skips, cur)
		}
	}
	last := cfg.Channels[len(cfg.Channels)-1]
	m1 := u.resnet("mid_block.resnets.0", cur, stemb, last)
	m2 := u.attention("mid_block.attentions.0", m1)
	u.free(m1)
	cur = u.resnet("mid_block.resnets.1", m2, stemb, last)
	u.free(m2)
	rev := slices.Clone(cfg.Channels)
	slices.Reverse(rev)
	for i, c := range rev {
		level := len(rev) - 1 - i
		for j := 0; j <= cfg.Layers; j++ {
			sk := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			cat := u.alloc(n, cur.c+sk.c, cur.h, cur.w)
			u.ops.ConcatChannels(cat.b, cur.b, sk.b, n, cur.c, sk.c, cur.h*cur.w)
			u.free(cur)
			u.free(sk)
			nx := u.resnet(fmt.Sprintf("up_blocks.%d.resnets.%d", i, j), cat, stemb, c)
			u.free(cat)
			if cfg.Attention[level] {
				a := u.attention(fmt.Sprintf("up_blocks.%d.attentions.%d", i, j), nx)
				u.free(nx)
				nx = a
			}
			cur = nx
		}
		if i < len(rev)-1 {
			up := u.alloc(n, cur.c, 2*cur.h, 2*cur.w)
			u.ops.Upsample2x(up.b, cur.b, n, cur.c, cur.h, cur.w)
			u.free(cur)
			cur = u.conv(fmt.Sprintf("up_blocks.%d.upsamplers.0.conv", i), up, c, 3, 1)
			u.free(up)
		}
	}
	hn := u.norm("conv_norm_out", cur, true)
	u.free(cur)
	d := kernels.ConvDims{N: n, C: ch0, H: h, W: w, K: cfg.InChannels, R: 3, S: 3, StrideH: 1, StrideW: 1,
		PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	u.ops.Conv2D(out, hn.b, u.p("conv_out.weight"), u.p("conv_out.bias"), d)
	u.free(hn)
	for _, b := range []B{tp, e1, e2} {
		u.ops.Free(b)
	}
}

// SampleDDIM runs steps deterministic DDIM steps (eta 0, Song et al. 2021,
// Eq. 12) of the linear-beta DDPM schedule (T = 1000) from noise x (N, C,
// H, W), in place. The update
// x <- sqrt(a_prev) (x - sqrt(1-a) eps)/sqrt(a) + sqrt(1-a_prev) eps
// is two Axpby calls, so the whole loop stays on the device.
func (u *UNet[B]) SampleDDIM(x B, n, h, w, steps int) {
	const T = 1000
	ac := make([]float64, T)
	p := 1.0
	for i := range ac {
		beta := 1e-4 + (0.02-1e-4)*float64(i)/float64(T-1)
		p *= 1 - beta
		ac[i] = p
	}
	size := n * u.cfg.InChannels * h * w
	eps := u.ops.Alloc(size)
	ts := make([]int, n)
	for s := 0; s < steps; s++ {
		t := T - 1 - s*(T/steps)
		for i := range ts {
			ts[i] = t
		}
		u.Forward(eps, x, ts, h, w)
		a, ap := ac[t], 1.0
		if s+1 < steps {
			ap = ac[T-1-(s+1)*(T/steps)]
		}
		// x0 = (x - sqrt(1-a) eps) / sqrt(a); x = sqrt(ap) x0 + sqrt(1-ap) eps
		c1 := math.Sqrt(ap) / math.Sqrt(a)
		c2 := math.Sqrt(1-ap) - math.Sqrt(ap)*math.Sqrt(1-a)/math.Sqrt(a)
		u.ops.Axpby(x, float32(c2), eps, float32(c1), size)
	}
	u.ops.Free(eps)
}
