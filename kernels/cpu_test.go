package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

var convCases = []ConvDims{
	{N: 2, C: 3, H: 5, W: 6, K: 4, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
	{N: 1, C: 4, H: 7, W: 7, K: 5, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
	{N: 3, C: 5, H: 4, W: 3, K: 6, R: 1, S: 1, StrideH: 1, StrideW: 1},                            // 1x1 direct
	{N: 2, C: 3, H: 8, W: 8, K: 3, R: 3, S: 3, StrideH: 2, StrideW: 2, PadBottom: 1, PadRight: 1}, // diffusers Downsample2D, padding 0
	{N: 2, C: 2, H: 7, W: 9, K: 3, R: 3, S: 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
	{N: 3, C: 2, H: 6, W: 5, K: 2, R: 2, S: 4, StrideH: 1, StrideW: 3, PadTop: 2, PadLeft: 0, PadBottom: 0, PadRight: 3}, // odd
	{N: 4, C: 16, H: 8, W: 8, K: 8, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
	// K >= 32: oneDNN's backward filter splits output channels (strided dy)
	{N: 3, C: 4, H: 5, W: 6, K: 40, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
	// one image, GEMMs large enough to be split over the threads (oneDNN:
	// one call with 2 OpenMP threads, K < 32)
	{N: 1, C: 16, H: 16, W: 16, K: 24, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
	// one image split by output channels for oneDNN (K = 48: chunks 16, 32)
	{N: 1, C: 5, H: 6, W: 7, K: 48, R: 3, S: 3, StrideH: 2, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 0, PadRight: 1},
}

func TestConv(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range backends(t) {
		for ci, d := range convCases {
			for _, bias := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/case%d/bias%v", c.Name(), ci, bias), func(t *testing.T) {
					ohw := d.OutH() * d.OutW()
					xs, ws := rnd(r, d.N*d.C*d.H*d.W), rnd(r, d.K*d.C*d.R*d.S)
					dys := rnd(r, d.N*d.K*ohw)
					var bs []float32
					var b64 []float64
					if bias {
						bs = rnd(r, d.K)
						b64 = f64(bs)
					}
					x, w, dy := newIn(xs), newIn(ws), newIn(dys)
					y := newOut(d.N * d.K * ohw)
					var bv []float32
					if bias {
						bv = newIn(bs).v()
					}
					c.Conv2D(y.v(), x.v(), w.v(), bv, d)
					dx, dw, db := newOut(len(xs)), newOut(len(ws)), newOut(d.K)
					c.Conv2DBackwardData(dx.v(), dy.v(), w.v(), d)
					var dbv []float32
					if bias {
						dbv = db.v()
					}
					c.Conv2DBackwardFilter(dw.v(), dbv, dy.v(), x.v(), d)
					if err := c.Sync(); err != nil {
						t.Fatal(err)
					}
					for _, g := range []struct {
						n string
						b *gbuf
					}{{"y", y}, {"dx", dx}, {"dw", dw}, {"db", db}, {"x", x}, {"w", w}, {"dy", dy}} {
						g.b.checkGuard(t, g.n)
					}
					same(t, "x", x.v(), xs)
					same(t, "w", w.v(), ws)
					same(t, "dy", dy.v(), dys)
					x64, w64, dy64 := f64(xs), f64(ws), f64(dys)
					// float32 sums over C*R*S (fwd, bwd data) or N*OH*OW (bwd filter) terms.
					near(t, "y", y.v(), refConv(x64, w64, b64, d), 1e-4, 1e-4)
					rdx, rdw, rdb := refConvBack(dy64, x64, w64, d)
					near(t, "dx", dx.v(), rdx, 1e-4, 1e-4)
					near(t, "dw", dw.v(), rdw, 1e-4, 1e-4)
					if bias {
						near(t, "db", db.v(), rdb, 1e-4, 1e-4)
					}
					// finite differences of the float64 forward twin, L = <conv(x, w, b), dy>.
					loss := func() float64 { return dot64(refConv(x64, w64, b64, d), dys) }
					fdCheck(t, "dL/dx", r, x64, loss, dx.v(), 1e-4, 1e-4)
					fdCheck(t, "dL/dw", r, w64, loss, dw.v(), 1e-4, 1e-4)
					if bias {
						fdCheck(t, "dL/db", r, b64, loss, db.v(), 1e-4, 1e-4)
					}
				})
			}
		}
	}
}

func TestLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, c := range backends(t) {
		// the last two are large enough for mm to split C by columns, then by rows
		for _, s := range [][3]int{{1, 1, 1}, {4, 7, 5}, {16, 64, 256}, {33, 130, 70}, {40, 100, 200}, {300, 50, 40}} {
			m, in, out := s[0], s[1], s[2]
			t.Run(fmt.Sprintf("%s/%dx%dx%d", c.Name(), m, in, out), func(t *testing.T) {
				xs, ws, bs, dys := rnd(r, m*in), rnd(r, out*in), rnd(r, out), rnd(r, m*out)
				x, w, b, dy := newIn(xs), newIn(ws), newIn(bs), newIn(dys)
				y, y0 := newOut(m*out), newOut(m*out)
				c.Linear(y.v(), x.v(), w.v(), b.v(), m, in, out)
				c.Linear(y0.v(), x.v(), w.v(), nil, m, in, out)
				dx, dw, db := newOut(m*in), newOut(out*in), newOut(out)
				c.LinearBackward(dx.v(), dw.v(), db.v(), dy.v(), x.v(), w.v(), m, in, out)
				if err := c.Sync(); err != nil {
					t.Fatal(err)
				}
				for _, g := range []*gbuf{y, y0, dx, dw, db, x, w, b, dy} {
					g.checkGuard(t, "buffer")
				}
				same(t, "x", x.v(), xs)
				same(t, "w", w.v(), ws)
				x64, w64, b64 := f64(xs), f64(ws), f64(bs)
				near(t, "y", y.v(), refLinear(x64, w64, b64, m, in, out), 1e-4, 1e-4)
				near(t, "y no bias", y0.v(), refLinear(x64, w64, nil, m, in, out), 1e-4, 1e-4)
				rdx, rdw, rdb := refLinearBack(f64(dys), x64, w64, m, in, out)
				near(t, "dx", dx.v(), rdx, 1e-4, 1e-4)
				near(t, "dw", dw.v(), rdw, 1e-4, 1e-4)
				near(t, "db", db.v(), rdb, 1e-4, 1e-4)
				loss := func() float64 { return dot64(refLinear(x64, w64, b64, m, in, out), dys) }
				fdCheck(t, "dL/dx", r, x64, loss, dx.v(), 1e-4, 1e-4)
				fdCheck(t, "dL/dw", r, w64, loss, dw.v(), 1e-4, 1e-4)
				fdCheck(t, "dL/db", r, b64, loss, db.v(), 1e-4, 1e-4)
			})
		}
	}
}

func TestGroupNorm(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	cases := []GroupNormDims{
		{N: 2, C: 4, HW: 6, Groups: 2, Eps: 1e-5},
		{N: 2, C: 4, HW: 6, Groups: 2, Eps: 1e-6, SiLU: true},
		{N: 3, C: 6, HW: 5, Groups: 6, Eps: 1e-5, SiLU: true},
		{N: 1, C: 8, HW: 9, Groups: 1, Eps: 1e-3},
		{N: 4, C: 32, HW: 64, Groups: 8, Eps: 1e-6, SiLU: true},
	}
	for _, c := range backends(t) {
		for ci, d := range cases {
			t.Run(fmt.Sprintf("%s/case%d", c.Name(), ci), func(t *testing.T) {
				n := d.N * d.C * d.HW
				xs := rnd(r, n)
				for i := range xs {
					xs[i] = xs[i]*2 + 0.5 // off-centre
				}
				gs, bs, dys := rnd(r, d.C), rnd(r, d.C), rnd(r, n)
				x, g, b, dy := newIn(xs), newIn(gs), newIn(bs), newIn(dys)
				y, mean, rstd := newOut(n), newOut(d.N*d.Groups), newOut(d.N*d.Groups)
				c.GroupNorm(y.v(), mean.v(), rstd.v(), x.v(), g.v(), b.v(), d)
				dx, dg, db := newOut(n), newOut(d.C), newOut(d.C)
				c.GroupNormBackward(dx.v(), dg.v(), db.v(), dy.v(), x.v(), mean.v(), rstd.v(), g.v(), b.v(), d)
				if err := c.Sync(); err != nil {
					t.Fatal(err)
				}
				for _, gb := range []*gbuf{y, mean, rstd, dx, dg, db, x, g, b, dy} {
					gb.checkGuard(t, "buffer")
				}
				same(t, "x", x.v(), xs)
				same(t, "dy", dy.v(), dys)
				x64, g64, b64 := f64(xs), f64(gs), f64(bs)
				ry, rm, rr := refGroupNorm(x64, g64, b64, d)
				near(t, "y", y.v(), ry, 1e-5, 1e-4)
				near(t, "mean", mean.v(), rm, 1e-6, 1e-5)
				near(t, "rstd", rstd.v(), rr, 1e-6, 1e-5)
				rdx, rdg, rdb := refGroupNormBack(f64(dys), x64, g64, b64, d)
				near(t, "dx", dx.v(), rdx, 1e-4, 1e-3)
				near(t, "dgamma", dg.v(), rdg, 1e-4, 1e-4)
				near(t, "dbeta", db.v(), rdb, 1e-4, 1e-4)
				loss := func() float64 { y, _, _ := refGroupNorm(x64, g64, b64, d); return dot64(y, dys) }
				fdCheck(t, "dL/dx", r, x64, loss, dx.v(), 1e-4, 1e-3)
				fdCheck(t, "dL/dgamma", r, g64, loss, dg.v(), 1e-4, 1e-4)
				fdCheck(t, "dL/dbeta", r, b64, loss, db.v(), 1e-4, 1e-4)
			})
		}
	}
}

func TestAttention(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	cases := []AttnDims{
		{B: 1, T: 1, Heads: 1, HeadDim: 1, Scale: 1},
		{B: 2, T: 5, Heads: 1, HeadDim: 4, Scale: 0.5},
		{B: 3, T: 7, Heads: 2, HeadDim: 3, Scale: float32(1 / math.Sqrt(3))},
		{B: 2, T: 64, Heads: 4, HeadDim: 8, Scale: float32(1 / math.Sqrt(8))},
		{B: 1, T: 96, Heads: 1, HeadDim: 64, Scale: 0.125}, // one pair: split GEMMs
	}
	for _, c := range backends(t) {
		for ci, d := range cases {
			t.Run(fmt.Sprintf("%s/case%d", c.Name(), ci), func(t *testing.T) {
				n := d.B * d.T * d.Heads * d.HeadDim
				qs, ks, vs, dos := rnd(r, n), rnd(r, n), rnd(r, n), rnd(r, n)
				q, k, v, do := newIn(qs), newIn(ks), newIn(vs), newIn(dos)
				o, dq, dk, dv := newOut(n), newOut(n), newOut(n), newOut(n)
				c.Attention(o.v(), q.v(), k.v(), v.v(), d)
				c.AttentionBackward(dq.v(), dk.v(), dv.v(), do.v(), q.v(), k.v(), v.v(), d)
				if err := c.Sync(); err != nil {
					t.Fatal(err)
				}
				for _, g := range []*gbuf{o, dq, dk, dv, q, k, v, do} {
					g.checkGuard(t, "buffer")
				}
				same(t, "q", q.v(), qs)
				same(t, "k", k.v(), ks)
				same(t, "v", v.v(), vs)
				q64, k64, v64 := f64(qs), f64(ks), f64(vs)
				near(t, "o", o.v(), refAttention(q64, k64, v64, d), 1e-5, 1e-4)
				rdq, rdk, rdv := refAttentionBack(f64(dos), q64, k64, v64, d)
				near(t, "dq", dq.v(), rdq, 1e-4, 1e-3)
				near(t, "dk", dk.v(), rdk, 1e-4, 1e-3)
				near(t, "dv", dv.v(), rdv, 1e-4, 1e-3)
				loss := func() float64 { return dot64(refAttention(q64, k64, v64, d), dos) }
				fdCheck(t, "dL/dq", r, q64, loss, dq.v(), 1e-4, 1e-3)
				fdCheck(t, "dL/dk", r, k64, loss, dk.v(), 1e-4, 1e-3)
				fdCheck(t, "dL/dv", r, v64, loss, dv.v(), 1e-4, 1e-3)
			})
		}
	}
}

// TestDNNLConvUsed checks that Conv "dnnl" really runs oneDNN primitives
// for every test shape (a rejected shape would silently use im2col).
func TestDNNLConvUsed(t *testing.T) {
	c, err := NewCPU(CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, Threads: 2})
	if err != nil {
		t.Skipf("oneDNN not available: %v", err)
	}
	for i, d := range append(convCases, benchConvShapes[0].d) {
		for _, pass := range []convPass{passForward, passBackwardData, passBackwardFilter} {
			p, ok := c.planDNNL(d, pass)
			if d.direct() && pass != passForward {
				if ok {
					t.Errorf("case %d: 1x1 backward pass %d should use the direct GEMM", i, pass)
				}
				continue
			}
			if !ok {
				t.Errorf("case %d %+v: oneDNN rejected the shape", i, d)
				continue
			}
			cd, _, _ := p.chunk(d, 0)
			t.Logf("case %d pass %d: %d chunks (by output channel %v): %s", i, pass, p.w, p.byK, c.dconv.get(cd, 0, p.yStride(d), p.omp).impl)
		}
	}
}

// TestConcurrent runs the same ops from several goroutines on one CPU
// (shared workspace pool and oneDNN primitives) and checks every result
// equals the serial one bit for bit.
func TestConcurrent(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	d := convCases[0]
	ohw := d.OutH() * d.OutW()
	x, w, dy := rnd(r, d.N*d.C*d.H*d.W), rnd(r, d.K*d.C*d.R*d.S), rnd(r, d.N*d.K*ohw)
	gd := GroupNormDims{N: 2, C: 8, HW: 30, Groups: 4, Eps: 1e-5, SiLU: true}
	gx := rnd(r, gd.N*gd.C*gd.HW)
	for _, c := range backends(t) {
		t.Run(c.Name(), func(t *testing.T) {
			run := func() []float32 {
				y, dx, dw := make([]float32, d.N*d.K*ohw), make([]float32, len(x)), make([]float32, len(w))
				c.Conv2D(y, x, w, nil, d)
				c.Conv2DBackwardData(dx, dy, w, d)
				c.Conv2DBackwardFilter(dw, nil, dy, x, d)
				gy, m, s := make([]float32, len(gx)), make([]float32, 8), make([]float32, 8)
				c.GroupNorm(gy, m, s, gx, nil, nil, gd)
				return append(append(append(y, dx...), dw...), gy...)
			}
			want := run()
			const workers = 4
			got := make([][]float32, workers)
			done := make(chan int)
			for i := 0; i < workers; i++ {
				go func() {
					for k := 0; k < 5; k++ {
						got[i] = run()
					}
					done <- i
				}()
			}
			for i := 0; i < workers; i++ {
				<-done
			}
			if err := c.Sync(); err != nil {
				t.Fatal(err)
			}
			for i := range got {
				for j := range want {
					if got[i][j] != want[j] {
						t.Fatalf("worker %d: value %d = %v, serial %v", i, j, got[i][j], want[j])
					}
				}
			}
		})
	}
}

// TestConstWeights checks the cached reordered weights: two weight
// buffers used alternately, then one changed in place (all values, as an
// optimiser step does) must give the new result.
func TestConstWeights(t *testing.T) {
	c, err := NewCPU(CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, Threads: 2, ConstWeights: true})
	if err != nil {
		t.Skipf("oneDNN not available: %v", err)
	}
	r := rand.New(rand.NewPCG(25, 26))
	for _, d := range []ConvDims{convCases[0], convCases[9]} { // batch split; one image split by channels
		x := rnd(r, d.N*d.C*d.H*d.W)
		w1, w2 := rnd(r, d.K*d.C*d.R*d.S), rnd(r, d.K*d.C*d.R*d.S)
		y := make([]float32, d.N*d.K*d.OutH()*d.OutW())
		check := func(name string, w []float32) {
			t.Helper()
			c.Conv2D(y, x, w, nil, d)
			if err := c.Sync(); err != nil {
				t.Fatal(err)
			}
			near(t, name, y, refConv(f64(x), f64(w), nil, d), 1e-4, 1e-4)
		}
		check("w1", w1)
		check("w2", w2)
		check("w1 again", w1)
		for i := range w1 {
			w1[i] = w1[i]*0.5 + 0.01
		}
		check("w1 changed in place", w1)
	}
}
