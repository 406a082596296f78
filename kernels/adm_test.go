package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// The ADM kernels against their float64 twins (adm_ref_test.go) on seeded
// random inputs in NaN guard bands, and every backward against central
// differences of the twin's forward, L = <forward, dy>.

func TestGroupNormScaleShift(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	cases := []GroupNormDims{
		{N: 2, C: 4, HW: 6, Groups: 2, Eps: 1e-5},
		{N: 2, C: 4, HW: 6, Groups: 2, Eps: 1e-5, SiLU: true},
		{N: 3, C: 6, HW: 5, Groups: 3, Eps: 1e-5, SiLU: true},
		{N: 2, C: 64, HW: 64, Groups: 32, Eps: 1e-5, SiLU: true}, // guided-diffusion's GroupNorm32
		{N: 3, C: 8, HW: 1, Groups: 2, Eps: 1e-5},                // (N, C) input, as spatial_v2's head
	}
	for _, c := range backends(t) {
		for ci, d := range cases {
			for _, skip := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/case%d/nilAffine=%v", c.Name(), ci, skip), func(t *testing.T) {
					n := d.N * d.C * d.HW
					xs := rnd(r, n)
					for i := range xs {
						xs[i] = xs[i]*2 + 0.5 // off-centre
					}
					gs, bs, sss, dys := rnd(r, d.C), rnd(r, d.C), rnd(r, 2*d.N*d.C), rnd(r, n)
					x, g, b, ss, dy := newIn(xs), newIn(gs), newIn(bs), newIn(sss), newIn(dys)
					gv, bv := g.v(), b.v()
					if skip {
						gv, bv = nil, nil
						for i := range gs {
							gs[i], bs[i] = 1, 0
						}
					}
					y, mean, rstd := newOut(n), newOut(d.N*d.Groups), newOut(d.N*d.Groups)
					c.GroupNormScaleShift(y.v(), mean.v(), rstd.v(), x.v(), gv, bv, ss.v(), d)
					dx, dg, db, dss := newOut(n), newOut(d.C), newOut(d.C), newOut(2*d.N*d.C)
					c.GroupNormScaleShiftBackward(dx.v(), dg.v(), db.v(), dss.v(), dy.v(), x.v(), mean.v(), rstd.v(), gv, bv, ss.v(), d)
					if err := c.Sync(); err != nil {
						t.Fatal(err)
					}
					for _, gb := range []*gbuf{y, mean, rstd, dx, dg, db, dss, x, g, b, ss, dy} {
						gb.checkGuard(t, "buffer")
					}
					same(t, "x", x.v(), xs)
					same(t, "ss", ss.v(), sss)
					same(t, "dy", dy.v(), dys)
					x64, g64, b64, ss64 := f64(xs), f64(gs), f64(bs), f64(sss)
					near(t, "y", y.v(), refGroupNormSS(x64, g64, b64, ss64, d), 1e-5, 1e-4)
					_, rm, rr := refGroupNorm(x64, g64, b64, d)
					near(t, "mean", mean.v(), rm, 1e-6, 1e-5)
					near(t, "rstd", rstd.v(), rr, 1e-6, 1e-5)
					loss := func() float64 { return dot64(refGroupNormSS(x64, g64, b64, ss64, d), dys) }
					fdCheck(t, "dL/dx", r, x64, loss, dx.v(), 1e-4, 1e-3)
					fdCheck(t, "dL/dss", r, ss64, loss, dss.v(), 1e-4, 1e-4)
					fdCheck(t, "dL/dgamma", r, g64, loss, dg.v(), 1e-4, 1e-4)
					fdCheck(t, "dL/dbeta", r, b64, loss, db.v(), 1e-4, 1e-4)
				})
			}
		}
	}
}

func TestAvgPool2x(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	for _, c := range backends(t) {
		for _, s := range [][4]int{{1, 1, 1, 1}, {2, 3, 4, 5}, {3, 7, 16, 16}} {
			n, ch, h, w := s[0], s[1], s[2], s[3]
			t.Run(fmt.Sprintf("%s/%v", c.Name(), s), func(t *testing.T) {
				xs, dys := rnd(r, n*ch*4*h*w), rnd(r, n*ch*h*w)
				x, dy := newIn(xs), newIn(dys)
				y, dx := newOut(n*ch*h*w), newOut(len(xs))
				c.AvgPool2x(y.v(), x.v(), n, ch, h, w)
				c.AvgPool2xBackward(dx.v(), dy.v(), n, ch, h, w)
				if err := c.Sync(); err != nil {
					t.Fatal(err)
				}
				for _, gb := range []*gbuf{x, dy, y, dx} {
					gb.checkGuard(t, "buffer")
				}
				same(t, "x", x.v(), xs)
				x64 := f64(xs)
				near(t, "y", y.v(), refAvgPool2x(x64, n, ch, h, w), 1e-6, 1e-6)
				loss := func() float64 { return dot64(refAvgPool2x(x64, n, ch, h, w), dys) }
				fdCheck(t, "dL/dx", r, x64, loss, dx.v(), 1e-6, 1e-5)
			})
		}
	}
}

func TestQKVAttention(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	cases := []QKVAttnDims{
		{B: 1, T: 1, Heads: 1, HeadDim: 1},
		{B: 2, T: 7, Heads: 3, HeadDim: 4},
		{B: 2, T: 17, Heads: 2, HeadDim: 8},
		{B: 3, T: 64, Heads: 4, HeadDim: 16}, // an 8x8 feature map of the fixture's model
	}
	for _, c := range backends(t) {
		for ci, d0 := range cases {
			for _, legacy := range []bool{false, true} {
				d := d0
				d.Legacy = legacy
				d.Scale = float32(1 / math.Sqrt(float64(d.HeadDim)))
				t.Run(fmt.Sprintf("%s/case%d/legacy=%v", c.Name(), ci, legacy), func(t *testing.T) {
					n := d.B * d.Heads * d.HeadDim * d.T
					qs, dos := rnd(r, 3*n), rnd(r, n)
					qkv, do := newIn(qs), newIn(dos)
					o, dqkv := newOut(n), newOut(3*n)
					c.QKVAttention(o.v(), qkv.v(), d)
					c.QKVAttentionBackward(dqkv.v(), do.v(), qkv.v(), d)
					if err := c.Sync(); err != nil {
						t.Fatal(err)
					}
					for _, gb := range []*gbuf{qkv, do, o, dqkv} {
						gb.checkGuard(t, "buffer")
					}
					same(t, "qkv", qkv.v(), qs)
					same(t, "do", do.v(), dos)
					q64 := f64(qs)
					near(t, "o", o.v(), refQKVAttention(q64, d), 1e-5, 1e-4)
					loss := func() float64 { return dot64(refQKVAttention(q64, d), dos) }
					fdCheck(t, "dL/dqkv", r, q64, loss, dqkv.v(), 1e-4, 1e-3)
				})
			}
		}
	}
}

// TestQKVAttentionOrders checks that the two head orders are the same
// attention on permuted channels: the legacy layout of a tensor equals
// the new layout of its channels regrouped per head.
func TestQKVAttentionOrders(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	c := backends(t)[0]
	d := QKVAttnDims{B: 2, T: 9, Heads: 3, HeadDim: 5, Scale: 0.4}
	D, T, H := d.HeadDim, d.T, d.Heads
	legacy := rnd(r, 3*d.B*H*D*T)
	fresh := make([]float32, len(legacy))
	for b := 0; b < d.B; b++ {
		for h := 0; h < H; h++ {
			for part := 0; part < 3; part++ { // q, k, v
				src := ((b*H+h)*3 + part) * D * T
				dst := ((b*3+part)*H + h) * D * T
				copy(fresh[dst:dst+D*T], legacy[src:src+D*T])
			}
		}
	}
	o1, o2 := make([]float32, d.B*H*D*T), make([]float32, d.B*H*D*T)
	dl := d
	dl.Legacy = true
	c.QKVAttention(o1, legacy, dl)
	c.QKVAttention(o2, fresh, d)
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	near(t, "legacy vs new order", o1, f64(o2), 0, 0)
}

func TestAttnPoolTokens(t *testing.T) {
	r := rand.New(rand.NewPCG(29, 30))
	for _, c := range backends(t) {
		for _, s := range [][3]int{{1, 1, 1}, {2, 3, 16}, {3, 5, 64}} {
			n, ch, hw := s[0], s[1], s[2]
			t.Run(fmt.Sprintf("%s/%v", c.Name(), s), func(t *testing.T) {
				tk := hw + 1
				xs, ps, dys := rnd(r, n*ch*hw), rnd(r, ch*tk), rnd(r, n*ch*tk)
				x, pos, dy := newIn(xs), newIn(ps), newIn(dys)
				y, dx, dpos, dx2 := newOut(n*ch*tk), newOut(len(xs)), newOut(len(ps)), newOut(len(xs))
				c.AttnPoolTokens(y.v(), x.v(), pos.v(), n, ch, hw)
				c.AttnPoolTokensBackward(dx.v(), dpos.v(), dy.v(), n, ch, hw)
				c.AttnPoolTokensBackward(dx2.v(), nil, dy.v(), n, ch, hw)
				if err := c.Sync(); err != nil {
					t.Fatal(err)
				}
				for _, gb := range []*gbuf{x, pos, dy, y, dx, dpos, dx2} {
					gb.checkGuard(t, "buffer")
				}
				same(t, "x", x.v(), xs)
				same(t, "pos", pos.v(), ps)
				same(t, "dx without dpos", dx2.v(), dx.v())
				x64, p64 := f64(xs), f64(ps)
				near(t, "y", y.v(), refAttnPoolTokens(x64, p64, n, ch, hw), 1e-6, 1e-5)
				loss := func() float64 { return dot64(refAttnPoolTokens(x64, p64, n, ch, hw), dys) }
				fdCheck(t, "dL/dx", r, x64, loss, dx.v(), 1e-5, 1e-4)
				fdCheck(t, "dL/dpos", r, p64, loss, dpos.v(), 1e-5, 1e-4)
			})
		}
	}
}

func TestChannelMean(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for _, c := range backends(t) {
		for _, s := range [][3]int{{1, 1, 1}, {2, 3, 10}, {4, 16, 300}} {
			n, ch, hw := s[0], s[1], s[2]
			t.Run(fmt.Sprintf("%s/%v", c.Name(), s), func(t *testing.T) {
				xs, dys := rnd(r, n*ch*hw), rnd(r, n*ch)
				x, dy := newIn(xs), newIn(dys)
				y, dx := newOut(n*ch), newOut(len(xs))
				c.ChannelMean(y.v(), x.v(), n, ch, hw)
				c.ChannelMeanBackward(dx.v(), dy.v(), n, ch, hw)
				if err := c.Sync(); err != nil {
					t.Fatal(err)
				}
				for _, gb := range []*gbuf{x, dy, y, dx} {
					gb.checkGuard(t, "buffer")
				}
				same(t, "x", x.v(), xs)
				x64 := f64(xs)
				near(t, "y", y.v(), refChannelMean(x64, n, ch, hw), 1e-6, 1e-5)
				loss := func() float64 { return dot64(refChannelMean(x64, n, ch, hw), dys) }
				fdCheck(t, "dL/dx", r, x64, loss, dx.v(), 1e-6, 1e-5)
			})
		}
	}
}

func TestReLU(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	for _, c := range backends(t) {
		const n = 1000
		xs, dys := rnd(r, n), rnd(r, n)
		xs[0], xs[1] = 0, float32(math.NaN())
		x, dy := newIn(xs), newIn(dys)
		y, dx := newOut(n), newOut(n)
		c.ReLU(y.v(), x.v(), n)
		c.ReLUBackward(dx.v(), dy.v(), x.v(), n)
		if err := c.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, gb := range []*gbuf{x, dy, y, dx} {
			gb.checkGuard(t, "buffer")
		}
		if !isNaN(y.v()[1]) || dx.v()[0] != 0 || dx.v()[1] != 0 {
			t.Fatalf("ReLU(NaN) = %v (want NaN), dReLU at 0 and NaN = %v, %v (want 0)", y.v()[1], dx.v()[0], dx.v()[1])
		}
		x64 := f64(xs[2:])
		near(t, "y", y.v()[2:], refReLU(x64), 0, 0)
		loss := func() float64 { return dot64(refReLU(x64), dys[2:]) }
		fdCheck(t, "dL/dx", r, x64, loss, dx.v()[2:], 1e-6, 1e-6)
	}
}
