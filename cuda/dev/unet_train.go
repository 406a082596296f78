package dev

import (
	"fmt"
	"math"
	"slices"

	"github.com/ddpm-go/ddpm/kernels"
)

// This file is the lab UNet's training step: a forward pass that records a
// tape of backward closures, the backward pass through kernels.Ops, the MSE
// loss gradient and AdamW, all on the device.

// tact is an activation kept for the backward pass, with its gradient.
type tact[B any] struct {
	b          B
	g          B // dL/d(this), zero until a consumer writes it
	hasG       bool
	n, c, h, w int
}

func (a *tact[B]) size() int { return a.n * a.c * a.h * a.w }

// Trainer holds a UNet's gradients and AdamW state and runs training steps.
type Trainer[B any] struct {
	u      *UNet[B]
	ops    kernels.Ops[B]
	grads  map[string]B
	m, v   map[string]B
	step   int
	tape   []func()
	owned  []B // activation and gradient buffers of the current step
	params kernels.AdamWParams
}

// NewTrainer allocates gradients and AdamW moments for u.
func NewTrainer[B any](u *UNet[B], h kernels.AdamWParams) *Trainer[B] {
	t := &Trainer[B]{u: u, ops: u.ops, grads: map[string]B{}, m: map[string]B{}, v: map[string]B{}, params: h}
	for name, n := range u.sizes {
		t.grads[name], t.m[name], t.v[name] = u.ops.Alloc(n), u.ops.Alloc(n), u.ops.Alloc(n)
	}
	return t
}

// Grad returns the gradient buffer of a parameter after Backward.
func (t *Trainer[B]) Grad(name string) B { return t.grads[name] }

func (t *Trainer[B]) buf(n int) B {
	b := t.ops.Alloc(n)
	t.owned = append(t.owned, b)
	return b
}

func (t *Trainer[B]) act(n, c, h, w int) *tact[B] {
	return &tact[B]{b: t.buf(n * c * h * w), n: n, c: c, h: h, w: w}
}

// accum adds g (size of a) into a's gradient.
func (t *Trainer[B]) accum(a *tact[B], g B) {
	if !a.hasG {
		a.g = t.buf(a.size())
		t.ops.Copy(a.g, g, a.size())
		a.hasG = true
		return
	}
	t.ops.Add(a.g, a.g, g, a.size())
}

// grad returns a's gradient (zeros if no consumer wrote one).
func (t *Trainer[B]) grad(a *tact[B]) B {
	if !a.hasG {
		a.g = t.buf(a.size())
		a.hasG = true
	}
	return a.g
}

func (t *Trainer[B]) record(f func()) { t.tape = append(t.tape, f) }

func (t *Trainer[B]) conv(name string, x *tact[B], cout, k, stride int) *tact[B] {
	u := t.u
	pad := k / 2
	d := kernels.ConvDims{N: x.n, C: x.c, H: x.h, W: x.w, K: cout, R: k, S: k, StrideH: stride, StrideW: stride,
		PadTop: pad, PadLeft: pad, PadBottom: pad, PadRight: pad}
	if stride == 2 && u.cfg.DownPad == 0 {
		d.PadTop, d.PadLeft = 0, 0
	}
	y := t.act(x.n, cout, d.OutH(), d.OutW())
	w := u.p(name + ".weight")
	t.ops.Conv2D(y.b, x.b, w, u.p(name+".bias"), d)
	t.record(func() {
		dy := t.grad(y)
		t.ops.Conv2DBackwardFilter(t.grads[name+".weight"], t.grads[name+".bias"], dy, x.b, d)
		dx := t.buf(x.size())
		t.ops.Conv2DBackwardData(dx, dy, w, d)
		t.accum(x, dx)
	})
	return y
}

func (t *Trainer[B]) norm(name string, x *tact[B], silu bool) *tact[B] {
	u := t.u
	y := t.act(x.n, x.c, x.h, x.w)
	ng := x.n * u.cfg.Groups
	m, r := t.buf(ng), t.buf(ng)
	gd := kernels.GroupNormDims{N: x.n, C: x.c, HW: x.h * x.w, Groups: u.cfg.Groups, Eps: u.cfg.Eps, SiLU: silu}
	gm, bt := u.p(name+".weight"), u.p(name+".bias")
	t.ops.GroupNorm(y.b, m, r, x.b, gm, bt, gd)
	t.record(func() {
		dx := t.buf(x.size())
		t.ops.GroupNormBackward(dx, t.grads[name+".weight"], t.grads[name+".bias"], t.grad(y), x.b, m, r, gm, bt, gd)
		t.accum(x, dx)
	})
	return y
}

// linear applies a Linear to rows (m, in) -> (m, out) held in plain buffers,
// with gradient callbacks: dIn receives dL/d(input) given dL/d(output).
func (t *Trainer[B]) linear(name string, x B, m, in, out int, dOut func() B, dIn func(B)) B {
	u := t.u
	y := t.buf(m * out)
	w := u.p(name + ".weight")
	t.ops.Linear(y, x, w, u.p(name+".bias"), m, in, out)
	t.record(func() {
		dx := t.buf(m * in)
		t.ops.LinearBackward(dx, t.grads[name+".weight"], t.grads[name+".bias"], dOut(), x, w, m, in, out)
		dIn(dx)
	})
	return y
}

func (t *Trainer[B]) resnet(name string, x, st *tact[B], cout int) *tact[B] {
	temb := st.c
	h1 := t.norm(name+".norm1", x, true)
	h2 := t.conv(name+".conv1", h1, cout, 3, 1)
	// h2 += proj(silu(temb)) per (n, c)
	h2b := t.act(h2.n, h2.c, h2.h, h2.w)
	var dproj B
	proj := t.linear(name+".time_emb_proj", st.b, x.n, temb, cout, func() B { return dproj },
		func(dst B) { t.accum(st, dst) })
	t.ops.AddChannelBias(h2b.b, h2.b, proj, x.n, cout, h2.h*h2.w)
	t.record(func() {
		g := t.grad(h2b)
		t.accum(h2, g)
		dproj = t.buf(x.n * cout)
		t.ops.ChannelSum(dproj, g, x.n, cout, h2.h*h2.w)
	})
	h3 := t.norm(name+".norm2", h2b, true)
	h4 := t.conv(name+".conv2", h3, cout, 3, 1)
	sc := x
	if x.c != cout {
		sc = t.conv(name+".conv_shortcut", x, cout, 1, 1)
	}
	out := t.act(h4.n, h4.c, h4.h, h4.w)
	t.ops.Add(out.b, h4.b, sc.b, out.size())
	t.record(func() {
		g := t.grad(out)
		t.accum(h4, g)
		t.accum(sc, g)
	})
	return out
}

func (t *Trainer[B]) attention(name string, x *tact[B]) *tact[B] {
	n, c, hw := x.n, x.c, x.h*x.w
	hn := t.norm(name+".group_norm", x, false)
	tok := t.buf(n * hw * c)
	t.ops.Transpose12(tok, hn.b, n, c, hw)
	var dq, dk, dv, dtokAttn, do B
	dtok := t.buf(n * hw * c) // accumulates d(tok) from q, k, v
	t.ops.Fill(dtok, 0, n*hw*c)
	t.record(func() { // runs after the q, k, v backward: d(tok) -> d(hn)
		dh := t.buf(n * c * hw)
		t.ops.Transpose12(dh, dtok, n, hw, c)
		t.accum(hn, dh)
	})
	addTok := func(g B) { t.ops.Add(dtok, dtok, g, n*hw*c) }
	q := t.linear(name+".to_q", tok, n*hw, c, c, func() B { return dq }, addTok)
	k := t.linear(name+".to_k", tok, n*hw, c, c, func() B { return dk }, addTok)
	v := t.linear(name+".to_v", tok, n*hw, c, c, func() B { return dv }, addTok)
	ad := kernels.AttnDims{B: n, T: hw, Heads: 1, HeadDim: c, Scale: float32(1 / math.Sqrt(float64(c)))}
	o := t.buf(n * hw * c)
	t.ops.Attention(o, q, k, v, ad)
	t.record(func() {
		dq, dk, dv = t.buf(n*hw*c), t.buf(n*hw*c), t.buf(n*hw*c)
		t.ops.AttentionBackward(dq, dk, dv, dtokAttn, q, k, v, ad)
	})
	ob := t.linear(name+".to_out.0", o, n*hw, c, c, func() B { return do }, func(g B) { dtokAttn = g })
	out := t.act(n, c, x.h, x.w)
	t.ops.Transpose12(out.b, ob, n, hw, c)
	t.ops.Add(out.b, out.b, x.b, n*c*hw)
	t.record(func() {
		g := t.grad(out)
		t.accum(x, g)
		do = t.buf(n * hw * c)
		t.ops.Transpose12(do, g, n, c, hw)
	})
	return out
}

// Step runs one training step on a batch: x0 (N, C, H, W), noise of the
// same shape, timesteps t (0-indexed): x_t = sqrt(a_t) x0 + sqrt(1-a_t)
// noise (Ho et al. 2020, Eq. 4, linear betas 1e-4..0.02, T = 1000), loss
// = mean (eps_theta(x_t, t) - noise)^2, gradients by the tape, then AdamW.
// It returns nothing to the host; Loss reads the loss when wanted.
func (t *Trainer[B]) Step(xt, noise B, ts []int, h, w int) {
	out := t.ForwardBackward(xt, noise, ts, h, w)
	_ = out
	t.step++
	for name, p := range t.u.params {
		t.ops.AdamW(p, t.m[name], t.v[name], t.grads[name], t.params, t.step, t.u.sizes[name])
	}
	t.release()
}

func (t *Trainer[B]) release() {
	for _, b := range t.owned {
		t.ops.Free(b)
	}
	t.owned = t.owned[:0]
	t.tape = t.tape[:0]
}

// ForwardBackward runs the forward pass on x_t, the MSE loss gradient
// against noise and the backward pass, leaving parameter gradients in Grad
// (overwritten, not accumulated). It returns the prediction buffer, valid
// until the next step.
func (t *Trainer[B]) ForwardBackward(xt, noise B, ts []int, h, w int) B {
	t.release()
	u, cfg := t.u, t.u.cfg
	n, ch0, temb := len(ts), cfg.Channels[0], 4*cfg.Channels[0]
	tp := t.buf(n * ch0)
	t.ops.Upload(tp, timestepEmbedding(ts, ch0))
	var de1, de2 B
	e1 := t.linear("time_embedding.linear_1", tp, n, ch0, temb, func() B { return de1 }, func(B) {})
	s1 := t.buf(n * temb)
	t.ops.SiLU(s1, e1, n*temb)
	var ds1 B
	t.record(func() { // after linear_2's backward has set ds1
		de1 = t.buf(n * temb)
		t.ops.SiLUBackward(de1, ds1, e1, n*temb)
	})
	e2 := t.linear("time_embedding.linear_2", s1, n, temb, temb, func() B { return de2 }, func(g B) { ds1 = g })
	st := t.act(n, temb, 1, 1)
	t.ops.SiLU(st.b, e2, n*temb)
	t.record(func() {
		de2 = t.buf(n * temb)
		t.ops.SiLUBackward(de2, t.grad(st), e2, n*temb)
	})

	in := &tact[B]{b: xt, n: n, c: cfg.InChannels, h: h, w: w}
	cur := t.conv("conv_in", in, ch0, 3, 1)
	skips := []*tact[B]{cur}
	for i, c := range cfg.Channels {
		for j := 0; j < cfg.Layers; j++ {
			cur = t.resnet(fmt.Sprintf("down_blocks.%d.resnets.%d", i, j), cur, st, c)
			if cfg.Attention[i] {
				cur = t.attention(fmt.Sprintf("down_blocks.%d.attentions.%d", i, j), cur)
			}
			skips = append(skips, cur)
		}
		if i < len(cfg.Channels)-1 {
			cur = t.conv(fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", i), cur, c, 3, 2)
			skips = append(skips, cur)
		}
	}
	last := cfg.Channels[len(cfg.Channels)-1]
	cur = t.resnet("mid_block.resnets.0", cur, st, last)
	cur = t.attention("mid_block.attentions.0", cur)
	cur = t.resnet("mid_block.resnets.1", cur, st, last)
	rev := slices.Clone(cfg.Channels)
	slices.Reverse(rev)
	for i, c := range rev {
		level := len(rev) - 1 - i
		for j := 0; j <= cfg.Layers; j++ {
			sk := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			a, b := cur, sk
			cat := t.act(n, a.c+b.c, a.h, a.w)
			t.ops.ConcatChannels(cat.b, a.b, b.b, n, a.c, b.c, a.h*a.w)
			t.record(func() {
				da, db := t.buf(a.size()), t.buf(b.size())
				t.ops.SplitChannels(da, db, t.grad(cat), n, a.c, b.c, a.h*a.w)
				t.accum(a, da)
				t.accum(b, db)
			})
			cur = t.resnet(fmt.Sprintf("up_blocks.%d.resnets.%d", i, j), cat, st, c)
			if cfg.Attention[level] {
				cur = t.attention(fmt.Sprintf("up_blocks.%d.attentions.%d", i, j), cur)
			}
		}
		if i < len(rev)-1 {
			x := cur
			up := t.act(n, x.c, 2*x.h, 2*x.w)
			t.ops.Upsample2x(up.b, x.b, n, x.c, x.h, x.w)
			t.record(func() {
				dx := t.buf(x.size())
				t.ops.Upsample2xBackward(dx, t.grad(up), n, x.c, x.h, x.w)
				t.accum(x, dx)
			})
			cur = t.conv(fmt.Sprintf("up_blocks.%d.upsamplers.0.conv", i), up, c, 3, 1)
		}
	}
	hn := t.norm("conv_norm_out", cur, true)
	pred := t.conv("conv_out", hn, cfg.InChannels, 3, 1)

	// dL/dpred = 2 (pred - noise) / size for L = mean (pred - noise)^2.
	size := pred.size()
	g := t.buf(size)
	t.ops.Copy(g, pred.b, size)
	t.ops.Axpby(g, -2/float32(size), noise, 2/float32(size), size)
	t.accum(pred, g)
	for i := len(t.tape) - 1; i >= 0; i-- {
		t.tape[i]()
	}
	_ = u
	return pred.b
}

// Close frees the gradients, the moments and the step's buffers.
func (t *Trainer[B]) Close() {
	t.release()
	for _, mp := range []map[string]B{t.grads, t.m, t.v} {
		for _, b := range mp {
			t.ops.Free(b)
		}
	}
}
