package gexec

import (
	"context"
	"fmt"
	"hash"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/chewxy/hm"
	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/kernels"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// testOp is a small custom op for the tests, generic over the backend as
// the real ops are: "silu" (y = x sigmoid(x)), "siluGrad" ((x, dy) -> dx),
// "mul" and "add" (elementwise), "sum" (the scalar sum of x) and
// "sumGrad" ((x, dsum) -> dsum broadcast to x's shape).
type testOp[B any] struct {
	kind   string
	arity  int
	shape  tensor.Shape
	inSize int // "sum": the operand's size
}

func (o *testOp[B]) Arity() int { return o.arity }
func (o *testOp[B]) Type() hm.Type {
	ts := make([]hm.Type, o.arity+1)
	for i := range ts {
		ts[i] = hm.TypeVariable(rune('α' + i)) // not 'b': Gorgonia's inference uses it
	}
	ts[o.arity] = gorgonia.TensorType{Dims: len(o.shape), Of: tensor.Float32}
	if len(o.shape) == 0 {
		ts[o.arity] = tensor.Float32
	}
	return hm.NewFnType(ts...)
}
func (o *testOp[B]) InferShape(...gorgonia.DimSizer) (tensor.Shape, error) {
	return o.shape.Clone(), nil
}
func (o *testOp[B]) Do(...gorgonia.Value) (gorgonia.Value, error) {
	return nil, fmt.Errorf("test op runs through gexec")
}
func (o *testOp[B]) ReturnsPtr() bool      { return false }
func (o *testOp[B]) CallsExtern() bool     { return false }
func (o *testOp[B]) OverwritesInput() int  { return -1 }
func (o *testOp[B]) WriteHash(h hash.Hash) { fmt.Fprintf(h, "%s%v", o.kind, o.shape) }
func (o *testOp[B]) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}
func (o *testOp[B]) String() string       { return o.kind }
func (o *testOp[B]) DiffWRT(n int) []bool { return make([]bool, n) }
func (o *testOp[B]) SymDiff(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	s := in[0].Shape()
	switch o.kind {
	case "silu":
		dx, err := gorgonia.ApplyOp(&testOp[B]{"siluGrad", 2, s, 0}, in[0], grad)
		return gorgonia.Nodes{dx}, err
	case "mul":
		da, err := gorgonia.ApplyOp(&testOp[B]{"mul", 2, s, 0}, grad, in[1])
		if err != nil {
			return nil, err
		}
		db, err := gorgonia.ApplyOp(&testOp[B]{"mul", 2, s, 0}, grad, in[0])
		return gorgonia.Nodes{da, db}, err
	case "add":
		return gorgonia.Nodes{grad, grad}, nil
	case "sum":
		dx, err := gorgonia.ApplyOp(&testOp[B]{"sumGrad", 2, s, 0}, in[0], grad)
		return gorgonia.Nodes{dx}, err
	}
	return nil, fmt.Errorf("no derivative of %s", o.kind)
}
func (o *testOp[B]) Exec(c *Ctx[B], out B, in []B) error {
	n := max(1, o.shape.TotalSize())
	switch o.kind {
	case "silu":
		c.Ops.SiLU(out, in[0], n)
	case "siluGrad":
		c.Ops.SiLUBackward(out, in[1], in[0], n)
	case "mul":
		c.Ops.Mul(out, in[0], in[1], n)
	case "add":
		c.Ops.Add(out, in[0], in[1], n)
	case "sum":
		c.Ops.ChannelSum(out, in[0], 1, 1, max(1, o.inSize))
	case "sumGrad":
		z := c.Temp(n)
		c.Ops.Fill(z, 0, n)
		c.Ops.AddChannelBias(out, z, in[1], 1, 1, n)
	}
	return nil
}

func newCPU(t testing.TB) *kernels.CPU {
	c, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func randData(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 2*r.Float32() - 1
	}
	return v
}

// closeTo reports the first index where |got - want| > abs + rel |want|
// (elementwise, NaN never close), or -1.
func closeTo(got, want []float32, abs, rel float64) int {
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if !(d <= abs+rel*math.Abs(float64(want[i]))) {
			return i
		}
	}
	return -1
}

// testGraph builds cost = sum(silu(x ⊙ w) ⊙ v + x) from test ops, and its
// gradients with Grad (x is used twice, so its gradient is an AddN).
func testGraph[B any](t *testing.T) (x, w, v, cost *gorgonia.Node, grads []*gorgonia.Node) {
	g := gorgonia.NewGraph()
	sh := tensor.Shape{4, 6}
	leaf := func(name string) *gorgonia.Node {
		return gorgonia.NewMatrix(g, tensor.Float32, gorgonia.WithShape(4, 6), gorgonia.WithName(name))
	}
	x, w, v = leaf("x"), leaf("w"), leaf("v")
	a := gorgonia.Must(gorgonia.ApplyOp(&testOp[B]{"mul", 2, sh, 0}, x, w))
	s := gorgonia.Must(gorgonia.ApplyOp(&testOp[B]{"silu", 1, sh, 0}, a))
	sv := gorgonia.Must(gorgonia.ApplyOp(&testOp[B]{"mul", 2, sh, 0}, s, v))
	u := gorgonia.Must(gorgonia.ApplyOp(&testOp[B]{"add", 2, sh, 0}, sv, x))
	cost = gorgonia.Must(gorgonia.ApplyOp(&testOp[B]{"sum", 1, tensor.Shape{}, 24}, u))
	grads, err := Grad[B](cost, x, w, v)
	if err != nil {
		t.Fatal(err)
	}
	return
}

// TestGrad: the executor's outputs and the gradients from Grad match the
// closed forms on kernels.CPU.
func TestGrad(t *testing.T) { checkGrad[[]float32](t, newCPU(t)) }

// TestGradCUDA repeats the check on cuda.Device (on the GPU, or on the CPU
// emulator of package cudatest).
func TestGradCUDA(t *testing.T) {
	d, err := cuda.Open(0, cuda.Options{Precision: "fp32"})
	if err != nil {
		t.Skipf("no GPU: %v", err)
	}
	defer d.Close()
	checkGrad[cuda.Ptr](t, d)
}

func checkGrad[B any](t *testing.T, ops kernels.Ops[B]) {
	x, w, v, cost, grads := testGraph[B](t)
	r := rand.New(rand.NewPCG(1, 2))
	xs, ws, vs := randData(r, 24), randData(r, 24), randData(r, 24)
	outs := append([]*gorgonia.Node{cost}, grads...)
	prog, err := Compile[B](ops, outs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	for _, in := range []struct {
		n *gorgonia.Node
		v []float32
	}{{x, xs}, {w, ws}, {v, vs}} {
		if err := prog.SetInput(in.n, in.v); err != nil {
			t.Fatal(err)
		}
	}
	// Run twice: buffers are reused across runs, results must not change.
	for range 2 {
		if err := prog.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	sig := func(a float64) float64 { return 1 / (1 + math.Exp(-a)) }
	var wantCost float64
	wantX, wantW, wantV := make([]float32, 24), make([]float32, 24), make([]float32, 24)
	for i := range xs {
		a := float64(xs[i]) * float64(ws[i])
		s := sig(a)
		silu, dsilu := a*s, s*(1+a*(1-s))
		wantCost += silu*float64(vs[i]) + float64(xs[i])
		wantX[i] = float32(float64(vs[i])*dsilu*float64(ws[i]) + 1)
		wantW[i] = float32(float64(vs[i]) * dsilu * float64(xs[i]))
		wantV[i] = float32(silu)
	}
	for i, want := range [][]float32{{float32(wantCost)}, wantX, wantW, wantV} {
		got := make([]float32, len(want))
		if err := prog.Read(outs[i], got); err != nil {
			t.Fatal(err)
		}
		if k := closeTo(got, want, 1e-6, 1e-5); k >= 0 {
			t.Errorf("output %d (%s)[%d] = %.7g, closed form %.7g (tolerance 1e-6 + 1e-5 relative)", i, outs[i].Name(), k, got[k], want[k])
		}
	}
	if st := prog.Stats(); st.Host != 0 {
		t.Errorf("stats %+v: no node should fall back to the host", st)
	}
}

// TestGradErrors: a w the cost does not depend on, and an op without
// SymDiff, are errors.
func TestGradErrors(t *testing.T) {
	x, _, _, cost, _ := testGraph[[]float32](t)
	other := gorgonia.NewMatrix(x.Graph(), tensor.Float32, gorgonia.WithShape(4, 6), gorgonia.WithName("unused"))
	if _, err := Grad[[]float32](cost, other); err == nil || !strings.Contains(err.Error(), "unused") {
		t.Fatalf("Grad wrt an unused leaf: %v", err)
	}
	g := gorgonia.NewGraph()
	a := gorgonia.NewVector(g, tensor.Float32, gorgonia.WithShape(3), gorgonia.WithName("a"))
	s := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.Exp(a))))
	if _, err := Grad[[]float32](s, a); err == nil {
		t.Fatal("Grad through Gorgonia's own ops: no error")
	}
}

// TestHostFallback: Gorgonia's own ops run on the host when allowed, and
// are listed as unsupported otherwise.
func TestHostFallback(t *testing.T) {
	g := gorgonia.NewGraph()
	a := gorgonia.NewVector(g, tensor.Float32, gorgonia.WithShape(3), gorgonia.WithName("a"))
	y := gorgonia.Must(gorgonia.Add(a, a))
	s := gorgonia.Must(gorgonia.ApplyOp(&testOp[[]float32]{"silu", 1, tensor.Shape{3}, 0}, y))
	if _, err := Compile[[]float32](newCPU(t), []*gorgonia.Node{s}, Options{}); err == nil || !strings.Contains(err.Error(), "do not implement gexec.Op") {
		t.Fatalf("Compile without HostFallback: %v", err)
	}
	prog, err := Compile[[]float32](newCPU(t), []*gorgonia.Node{s}, Options{HostFallback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	prog.SetInput(a, []float32{-1, 0, 2})
	if err := prog.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 3)
	prog.Read(s, got)
	for i, v := range []float64{-2, 0, 4} {
		if want := v / (1 + math.Exp(-v)); math.Abs(float64(got[i])-want) > 1e-6 {
			t.Fatalf("silu(a + a) = %v", got)
		}
	}
	if st := prog.Stats(); st.Host != 1 {
		t.Fatalf("stats %+v: want one host step", st)
	}
}

// TestLivenessReuse: a chain of 20 SiLUs needs the input, the output and
// two alternating intermediates, not 21 buffers.
func TestLivenessReuse(t *testing.T) {
	g := gorgonia.NewGraph()
	x := gorgonia.NewMatrix(g, tensor.Float32, gorgonia.WithShape(4, 6), gorgonia.WithName("x"))
	h := x
	for i := 0; i < 20; i++ {
		h = gorgonia.Must(gorgonia.ApplyOp(&testOp[[]float32]{"silu", 1, tensor.Shape{4, 6}, i}, h))
	}
	cpu := newCPU(t)
	prog, err := Compile[[]float32](cpu, []*gorgonia.Node{h}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	st := prog.Stats()
	if st.Steps != 20 || st.Buffers > 4 {
		t.Fatalf("stats %+v: want 20 steps in at most 4 buffers", st)
	}
	xs := randData(rand.New(rand.NewPCG(3, 4)), 24)
	prog.SetInput(x, xs)
	if err := prog.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 24)
	if err := prog.Read(h, got); err != nil {
		t.Fatal(err)
	}
	want := append([]float32(nil), xs...)
	for i := 0; i < 20; i++ {
		cpu.SiLU(want, want, 24)
	}
	if k := closeTo(got, want, 1e-7, 1e-6); k >= 0 {
		t.Fatalf("chain result [%d] = %.7g, want %.7g (tolerance 1e-7 + 1e-6 relative)", k, got[k], want[k])
	}
}

// TestBindOutput: an output bound to a caller's buffer is written there.
func TestBindOutput(t *testing.T) {
	x, w, v, cost, grads := testGraph[[]float32](t)
	prog, err := Compile[[]float32](newCPU(t), append([]*gorgonia.Node{cost}, grads...), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	flat := make([]float32, 3*24)
	for i, gn := range grads {
		if err := prog.Bind(gn, flat[i*24:(i+1)*24]); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []*gorgonia.Node{x, w, v} {
		prog.SetInput(n, randData(r, 24))
	}
	if err := prog.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	gv := make([]float32, 24)
	prog.Read(grads[2], gv)
	if k := closeTo(flat[48:], gv, 0, 0); k >= 0 || gv[0] == 0 {
		t.Fatalf("bound gradient buffer differs from the node's value (at %d)", k)
	}
	if err := prog.Bind(grads[0], flat); err == nil {
		t.Fatal("binding twice: no error")
	}
}

func TestCompileErrors(t *testing.T) {
	if _, err := Compile[[]float32](newCPU(t), nil, Options{}); err == nil {
		t.Fatal("Compile with no outputs: want an error")
	}
	g := gorgonia.NewGraph()
	x := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(2, 2), gorgonia.WithName("x64"))
	y := gorgonia.Must(gorgonia.Add(x, x))
	if _, err := Compile[[]float32](newCPU(t), []*gorgonia.Node{y}, Options{}); err == nil || !strings.Contains(err.Error(), "float32") {
		t.Fatalf("float64 graph: error = %v, want one naming float32", err)
	}
}

func ExampleGrad() {
	g := gorgonia.NewGraph()
	x := gorgonia.NewVector(g, tensor.Float32, gorgonia.WithShape(3), gorgonia.WithName("x"))
	y := gorgonia.Must(gorgonia.ApplyOp(&testOp[[]float32]{"silu", 1, tensor.Shape{3}, 0}, x))
	cost := gorgonia.Must(gorgonia.ApplyOp(&testOp[[]float32]{"sum", 1, tensor.Shape{}, 3}, y))
	dx, _ := Grad[[]float32](cost, x)
	cpu, _ := kernels.NewCPU(kernels.CPUOptions{})
	prog, err := Compile[[]float32](cpu, []*gorgonia.Node{cost, dx[0]}, Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer prog.Close()
	prog.SetInput(x, []float32{0, 0, 0})
	prog.Run(context.Background())
	c, d := make([]float32, 1), make([]float32, 3)
	prog.Read(cost, c)
	prog.Read(dx[0], d)
	fmt.Println(c, d) // silu(0) = 0, silu'(0) = 1/2
	// Output: [0] [0.5 0.5 0.5]
}

// TestProfile: a profiled run computes what Run computes and reports
// every node under its op's kind.
func TestProfile(t *testing.T) {
	x, w, v, cost, grads := testGraph[[]float32](t)
	prog, err := Compile[[]float32](newCPU(t), append([]*gorgonia.Node{cost}, grads...), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []*gorgonia.Node{x, w, v} {
		prog.SetInput(n, randData(r, 24))
	}
	prof, err := prog.Profile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	nodes := 0
	kinds := map[string]bool{}
	for _, p := range prof {
		nodes += p.Count
		kinds[p.Op] = true
	}
	if nodes != prog.Stats().Steps || !kinds["mul"] || !kinds["AddN"] {
		t.Fatalf("profile %+v: want every one of %d steps, mul and AddN among them", prof, prog.Stats().Steps)
	}
}
