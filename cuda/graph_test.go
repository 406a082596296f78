package cuda

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ddpm-go/ddpm/kernels"
)

// graphStep queues a small "forward pass" on o: conv + bias, GroupNorm +
// SiLU, a linear layer over the tokens, attention, and a residual, and
// returns the output buffer. The buffers are allocated once by the caller
// (the same pointers each step, as a compiled program has).
type graphBufs struct {
	x, w, b, y, mean, rstd, gm, bt, h, tok, q, o, lw, out Ptr
}

var (
	gConv = kernels.ConvDims{N: 2, C: 3, H: 6, W: 6, K: 4, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	gGN   = kernels.GroupNormDims{N: 2, C: 4, HW: 36, Groups: 2, Eps: 1e-5, SiLU: true}
	gAttn = kernels.AttnDims{B: 2, T: 36, Heads: 1, HeadDim: 4, Scale: 0.5}
)

func newGraphBufs(o kernels.Ops[Ptr], r *rand.Rand) graphBufs {
	up := func(n int) Ptr {
		p := o.Alloc(n)
		o.Upload(p, randVec(r, n))
		return p
	}
	n := 2 * 4 * 36
	return graphBufs{x: up(2 * 3 * 36), w: up(4 * 3 * 9), b: up(4), y: o.Alloc(n), mean: o.Alloc(4), rstd: o.Alloc(4),
		gm: up(4), bt: up(4), h: o.Alloc(n), tok: o.Alloc(n), q: o.Alloc(n), o: o.Alloc(n), lw: up(16), out: o.Alloc(n)}
}

func graphStep(o kernels.Ops[Ptr], b graphBufs) {
	o.Conv2D(b.y, b.x, b.w, b.b, gConv)
	o.GroupNorm(b.h, b.mean, b.rstd, b.y, b.gm, b.bt, gGN)
	o.Transpose12(b.tok, b.h, 2, 4, 36)
	o.Linear(b.q, b.tok, b.lw, 0, 72, 4, 4)
	o.Attention(b.o, b.q, b.q, b.tok, gAttn)
	o.Axpby(b.o, 0.5, b.tok, 1, 2*4*36)
	o.Transpose12(b.out, b.o, 2, 36, 4)
	o.Add(b.out, b.out, b.y, 2*4*36)
}

// TestGraphOps runs the same step five times through GraphOps with new
// input values each time (uploaded between steps, as a sampling loop
// does): the first runs op by op, the second is captured, the rest are
// graph launches; every output equals the plain Device's bit for bit.
func TestGraphOps(t *testing.T) {
	plain := openTest(t, "tf32")
	gd := openTest(t, "tf32")
	g := NewGraphOps(gd)
	if !gd.canCapture() {
		t.Skip("the driver has no graph entry points")
	}
	r1, r2 := rand.New(rand.NewPCG(1, 1)), rand.New(rand.NewPCG(1, 1))
	pb, gb := newGraphBufs(plain, r1), newGraphBufs(g, r2)
	const n = 2 * 4 * 36
	for step := 0; step < 5; step++ {
		in := randVec(rand.New(rand.NewPCG(uint64(step), 3)), 2*3*36)
		plain.Upload(pb.x, in)
		g.Upload(gb.x, in)
		graphStep(plain, pb)
		graphStep(g, gb)
		want, got := make([]float32, n), make([]float32, n)
		plain.Download(want, pb.out)
		g.Download(got, gb.out)
		if err := plain.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := g.Sync(); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if !equal(got, want) {
			t.Fatalf("step %d: the graph's output differs from the Device's", step)
		}
	}
	st := g.Stats()
	if st.Eager != 1 || st.Captured != 1 || st.Replayed != 3 || st.Failed != 0 || st.Graphs != 1 {
		t.Fatalf("stats %+v, want 1 eager, 1 captured, 3 replayed", st)
	}
	t.Logf("%s: %+v", g.Name(), st)
}

// TestGraphOpsInvalidation: a graph whose scratch buffers were
// reallocated (a bigger convolution grew the im2col/cuDNN workspace) is
// dropped and captured again; a new shape is a new sequence.
func TestGraphOpsInvalidation(t *testing.T) {
	gd := openTestWith(t, Options{Precision: "fp32", Conv: "im2col"})
	g := NewGraphOps(gd)
	if !gd.canCapture() {
		t.Skip("the driver has no graph entry points")
	}
	b := newGraphBufs(g, rand.New(rand.NewPCG(2, 2)))
	run := func() []float32 {
		graphStep(g, b)
		out := make([]float32, 2*4*36)
		g.Download(out, b.out)
		if err := g.Sync(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	first := run()
	run() // captured
	run() // replayed
	// A bigger convolution grows the column scratch the graph refers to.
	big := kernels.ConvDims{N: 4, C: 16, H: 12, W: 12, K: 8, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	x, w, y := g.Alloc(4*16*144), g.Alloc(8*16*9), g.Alloc(4*8*144)
	g.Conv2D(y, x, w, 0, big)
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := run(); !equal(got, first) {
		t.Fatal("after the scratch grew: output differs")
	}
	st := g.Stats()
	if st.Captured != 2 || st.Replayed != 1 {
		t.Fatalf("stats %+v: want the stale graph dropped and the sequence captured again", st)
	}
	run()
	if st := g.Stats(); st.Replayed != 2 {
		t.Fatalf("stats %+v: the new graph should replay", st)
	}
}

// TestGraphOpsEmbeddingBoundary: ops GraphOps does not defer (Embedding
// reads host ids) run in order between deferred ones.
func TestGraphOpsEmbeddingBoundary(t *testing.T) {
	g := NewGraphOps(openTest(t, "fp32"))
	table, y, z := g.Alloc(4*3), g.Alloc(2*3), g.Alloc(2*3)
	g.Upload(table, []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	for step := 0; step < 4; step++ {
		g.Fill(y, -1, 6)
		g.Embedding(y, table, []int{step % 4, 3}, 3)
		g.Axpby(z, 2, y, 0, 6)
		got := make([]float32, 6)
		g.Download(got, z)
		if err := g.Sync(); err != nil {
			t.Fatal(err)
		}
		k := float32(3 * (step % 4))
		want := []float32{2 * k, 2 * (k + 1), 2 * (k + 2), 18, 20, 22}
		if !equal(got, want) {
			t.Fatalf("step %d: %v, want %v", step, got, want)
		}
	}
	if st := g.Stats(); st.Replayed == 0 {
		t.Fatalf("stats %+v: the repeated Axpby/Fill sequences should replay", st)
	}
}

// TestGraphOpsErrors: an argument error inside a deferred op still
// surfaces at Sync, and the next step works.
func TestGraphOpsErrors(t *testing.T) {
	g := NewGraphOps(openTest(t, "fp32"))
	x := g.Alloc(8)
	for i := 0; i < 3; i++ {
		g.SiLU(x, x, 8)
	}
	g.Clamp(x, x, 1, -1, 8) // lo > hi
	if err := g.Sync(); err == nil {
		t.Fatal("Clamp(lo > hi) through GraphOps: no error")
	}
	g.SiLU(x, x, 8)
	if err := g.Sync(); err != nil {
		t.Fatalf("after the error: %v", err)
	}
	v := make([]float32, 8)
	g.Download(v, x)
	for _, f := range v {
		if math.IsNaN(float64(f)) {
			t.Fatal("NaN")
		}
	}
}
