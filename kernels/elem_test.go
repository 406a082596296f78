package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestElementwise compares each elementwise op with its formula, in
// float64, at sizes on both sides of the parallel grain.
func TestElementwise(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	type tc struct {
		name string
		run  func(c *CPU, y []float32, a, b []float32, n int)
		ref  func(y0, a, b float64) float64
		inY  bool // y holds input values (in-place ops)
	}
	cases := []tc{
		{"SiLU", func(c *CPU, y, a, _ []float32, n int) { c.SiLU(y, a, n) },
			func(_, a, _ float64) float64 { return a * sig64(a) }, false},
		{"SiLUBackward", func(c *CPU, y, a, b []float32, n int) { c.SiLUBackward(y, b, a, n) },
			func(_, a, b float64) float64 { s := sig64(a); return b * s * (1 + a*(1-s)) }, false},
		{"Add", func(c *CPU, y, a, b []float32, n int) { c.Add(y, a, b, n) },
			func(_, a, b float64) float64 { return a + b }, false},
		{"Mul", func(c *CPU, y, a, b []float32, n int) { c.Mul(y, a, b, n) },
			func(_, a, b float64) float64 { return a * b }, false},
		{"Clamp", func(c *CPU, y, a, _ []float32, n int) { c.Clamp(y, a, -0.5, 0.75, n) },
			func(_, a, _ float64) float64 { return math.Min(math.Max(a, -0.5), 0.75) }, false},
		{"Axpby0", func(c *CPU, y, a, _ []float32, n int) { c.Axpby(y, 1.5, a, 0, n) },
			func(_, a, _ float64) float64 { return 1.5 * a }, false},
		{"Axpby", func(c *CPU, y, a, _ []float32, n int) { c.Axpby(y, 1.5, a, -0.25, n) },
			func(y, a, _ float64) float64 { return 1.5*a - 0.25*y }, true},
		{"EMA", func(c *CPU, y, a, _ []float32, n int) { c.EMA(y, a, 0.99, n) },
			func(y, a, _ float64) float64 { return 0.99*y + 0.01*a }, true},
		{"Fill", func(c *CPU, y, _, _ []float32, n int) { c.Fill(y, 2.5, n) },
			func(_, _, _ float64) float64 { return 2.5 }, false},
		{"Copy", func(c *CPU, y, a, _ []float32, n int) { c.Copy(y, a, n) },
			func(_, a, _ float64) float64 { return a }, false},
	}
	for _, c := range backends(t) {
		for _, tt := range cases {
			for _, n := range []int{1, 7, 3*elemGrain + 5} {
				t.Run(fmt.Sprintf("%s/%s/%d", c.Name(), tt.name, n), func(t *testing.T) {
					as, bs := rnd(r, n), rnd(r, n)
					as[0] = 30 // sigmoid saturation
					if n > 1 {
						as[1] = -30
					}
					a, b := newIn(as), newIn(bs)
					y := newOut(n)
					var ys []float32
					if tt.inY {
						ys = rnd(r, n)
						copy(y.v(), ys)
					}
					tt.run(c, y.v(), a.v(), b.v(), n)
					if err := c.Sync(); err != nil {
						t.Fatal(err)
					}
					y.checkGuard(t, "y")
					same(t, "a", a.v(), as)
					same(t, "b", b.v(), bs)
					want := make([]float64, n)
					for i := range want {
						y0 := 0.0
						if tt.inY {
							y0 = float64(ys[i])
						}
						want[i] = tt.ref(y0, float64(as[i]), float64(bs[i]))
					}
					near(t, tt.name, y.v(), want, 1e-6, 1e-6) // one float32 rounding or two
				})
			}
		}
	}
}

func TestSiLUBackwardFD(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	c, _ := NewCPU(CPUOptions{BLAS: BLASGonum, Threads: 1})
	n := 50
	xs, dys := rnd(r, n), rnd(r, n)
	dx := make([]float32, n)
	c.SiLUBackward(dx, dys, xs, n)
	x64 := f64(xs)
	loss := func() float64 {
		s := 0.0
		for i, v := range x64 {
			s += v * sig64(v) * float64(dys[i])
		}
		return s
	}
	fdCheck(t, "dsilu", r, x64, loss, dx, 1e-5, 1e-4)
}

func TestSumSquares(t *testing.T) {
	c, _ := NewCPU(CPUOptions{BLAS: BLASGonum})
	if got := c.SumSquares([]float32{1, -2, 3, 100}, 3); got != 14 {
		t.Fatalf("SumSquares = %v, want 14", got)
	}
}

// TestAdjoints checks each linear data-movement op against its backward
// with the identity <f(x), g> = <x, f^T(g)> (exact up to rounding), which
// is the finite-difference check of a linear map, and each forward against
// its index formula.
func TestAdjoints(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	const n, ch, h, w = 2, 3, 4, 5
	hw := h * w
	for _, c := range backends(t) {
		t.Run(c.Name(), func(t *testing.T) {
			// Upsample2x.
			x := rnd(r, n*ch*hw)
			y, g := newOut(4*len(x)), rnd(r, 4*len(x))
			c.Upsample2x(y.v(), x, n, ch, h, w)
			dx := newOut(len(x))
			c.Upsample2xBackward(dx.v(), g, n, ch, h, w)
			y.checkGuard(t, "upsample y")
			dx.checkGuard(t, "upsample dx")
			for p := 0; p < n*ch; p++ {
				for i := 0; i < 2*h; i++ {
					for j := 0; j < 2*w; j++ {
						if y.v()[p*4*hw+i*2*w+j] != x[p*hw+(i/2)*w+j/2] {
							t.Fatalf("Upsample2x wrong at %d,%d,%d", p, i, j)
						}
					}
				}
			}
			adj(t, "Upsample2x", dot32(y.v(), g), dot32(x, dx.v()))

			// AddChannelBias / ChannelSum (adjoint in the bias).
			bias := rnd(r, n*ch)
			yb, gb := newOut(len(x)), rnd(r, len(x))
			c.AddChannelBias(yb.v(), x, bias, n, ch, hw)
			for i := range x {
				if yb.v()[i] != x[i]+bias[i/hw] {
					t.Fatalf("AddChannelBias wrong at %d", i)
				}
			}
			db := newOut(n * ch)
			c.ChannelSum(db.v(), gb, n, ch, hw)
			zero := make([]float32, len(x))
			yz := make([]float32, len(x))
			c.AddChannelBias(yz, zero, bias, n, ch, hw)
			adj(t, "ChannelSum", dot32(yz, gb), dot32(bias, db.v()))
			db.checkGuard(t, "db")

			// ConcatChannels / SplitChannels.
			ca, cb := 2, 3
			a, b := rnd(r, n*ca*hw), rnd(r, n*cb*hw)
			yc, gc := newOut(n*(ca+cb)*hw), rnd(r, n*(ca+cb)*hw)
			c.ConcatChannels(yc.v(), a, b, n, ca, cb, hw)
			da, dbb := newOut(len(a)), newOut(len(b))
			c.SplitChannels(da.v(), dbb.v(), gc, n, ca, cb, hw)
			c.SplitChannels(nil, dbb.v(), gc, n, ca, cb, hw)
			adj(t, "Concat", dot32(yc.v(), gc), dot32(a, da.v())+dot32(b, dbb.v()))
			yc.checkGuard(t, "concat")
			if yc.v()[(ca)*hw] != b[0] || yc.v()[(ca+cb)*hw] != a[ca*hw] {
				t.Fatal("ConcatChannels layout wrong")
			}

			// Transpose12 is its own adjoint with i and j swapped.
			yt := newOut(len(x))
			c.Transpose12(yt.v(), x, n, ch, hw)
			for b := 0; b < n; b++ {
				for i := 0; i < ch; i++ {
					for j := 0; j < hw; j++ {
						if yt.v()[(b*hw+j)*ch+i] != x[(b*ch+i)*hw+j] {
							t.Fatal("Transpose12 wrong")
						}
					}
				}
			}
			yt.checkGuard(t, "transpose")

			// Embedding / EmbeddingBackward.
			const vocab, dim = 5, 3
			table := rnd(r, vocab*dim)
			ids := []int{4, 0, 4, 2}
			ye, ge := newOut(len(ids)*dim), rnd(r, len(ids)*dim)
			c.Embedding(ye.v(), table, ids, dim)
			dt := newOut(vocab * dim)
			c.EmbeddingBackward(dt.v(), ge, ids, vocab, dim)
			adj(t, "Embedding", dot32(ye.v(), ge), dot32(table, dt.v()))
			ye.checkGuard(t, "embedding")
			dt.checkGuard(t, "dtable")
			if err := c.Sync(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func adj(t *testing.T, name string, a, b float64) {
	t.Helper()
	if math.Abs(a-b) > 1e-4*(1+math.Abs(a)) {
		t.Fatalf("%s: <f(x), g> = %v but <x, f^T(g)> = %v", name, a, b)
	}
}

func TestAdamW(t *testing.T) {
	c, _ := NewCPU(CPUOptions{BLAS: BLASGonum})
	h := AdamWParams{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	p, m, v, g := []float32{1, -2}, []float32{0, 0.5}, []float32{0, 0.25}, []float32{0.5, -1}
	for step := 1; step <= 3; step++ {
		want := make([]float64, 2)
		for i := range p {
			mi := 0.9*float64(m[i]) + 0.1*float64(g[i])
			vi := 0.999*float64(v[i]) + 0.001*float64(g[i])*float64(g[i])
			mh := mi / (1 - math.Pow(0.9, float64(step)))
			vh := vi / (1 - math.Pow(0.999, float64(step)))
			want[i] = float64(p[i]) - 0.1*(mh/(math.Sqrt(vh)+1e-8)+0.01*float64(p[i]))
		}
		c.AdamW(p, m, v, g, h, step, 2)
		near(t, fmt.Sprintf("p step %d", step), p, want, 1e-6, 1e-5)
	}
	c.AdamW(p, m, v, g, h, 0, 2)
	if err := c.Sync(); err == nil {
		t.Fatal("step 0: want error")
	}
}

// TestErrors checks that bad dimensions and short buffers never panic and
// reach Sync as errors naming the op.
func TestErrors(t *testing.T) {
	c, _ := NewCPU(CPUOptions{BLAS: BLASGonum, Threads: 2})
	s := make([]float32, 4)
	tests := []struct {
		name string
		run  func()
	}{
		{"Conv2D dims", func() { c.Conv2D(s, s, s, nil, ConvDims{}) }},
		{"Conv2D short", func() {
			c.Conv2D(s, s, s, nil, ConvDims{N: 1, C: 1, H: 3, W: 3, K: 1, R: 1, S: 1, StrideH: 1, StrideW: 1})
		}},
		{"Linear short", func() { c.Linear(s, s, s, nil, 3, 3, 3) }},
		{"GroupNorm groups", func() { c.GroupNorm(s, s, s, s, nil, nil, GroupNormDims{N: 1, C: 3, HW: 1, Groups: 2}) }},
		{"Attention dims", func() { c.Attention(s, s, s, s, AttnDims{B: 1, T: 0, Heads: 1, HeadDim: 1}) }},
		{"Embedding id", func() { c.Embedding(s, s, []int{7}, 2) }},
		{"Add short", func() { c.Add(s, s, s, 5) }},
		{"Slice range", func() { c.Slice(s, 2, 3) }},
		{"Clamp order", func() { c.Clamp(s, s, 1, 0, 4) }},
		{"Alloc negative", func() { c.Alloc(-1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run()
			if err := c.Sync(); err == nil {
				t.Fatal("want an error from Sync")
			}
			if err := c.Sync(); err != nil {
				t.Fatalf("Sync did not clear the error: %v", err)
			}
		})
	}
	if _, err := NewCPU(CPUOptions{BLAS: BLASLibrary(9)}); err == nil {
		t.Fatal("NewCPU(cublas): want error")
	}
	if _, err := NewCPU(CPUOptions{Threads: -1}); err == nil {
		t.Fatal("NewCPU(Threads -1): want error")
	}
}

func ExampleCPU_Conv2D() {
	c, err := NewCPU(CPUOptions{BLAS: BLASGonum, Threads: 1})
	if err != nil {
		panic(err)
	}
	// One 1-channel 3x3 image, a 3x3 box filter, padding 1: each output is
	// the sum of the input's in-bounds neighbourhood.
	d := ConvDims{N: 1, C: 1, H: 3, W: 3, K: 1, R: 3, S: 3, StrideH: 1, StrideW: 1,
		PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	x := []float32{1, 1, 1, 1, 1, 1, 1, 1, 1}
	w := []float32{1, 1, 1, 1, 1, 1, 1, 1, 1}
	y := c.Alloc(d.N * d.K * d.OutH() * d.OutW())
	c.Conv2D(y, x, w, nil, d)
	if err := c.Sync(); err != nil {
		panic(err)
	}
	fmt.Println(y)
	// Output: [4 6 4 6 9 6 4 6 4]
}
