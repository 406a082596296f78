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

// siluOp is a test custom op: y = x sigmoid(x), with a Gorgonia Do for the
// TapeMachine, a SymDiff giving siluGradOp, and Exec for the executor.
type siluOp struct{}

func (siluOp) Arity() int { return 1 }
func (siluOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(a, a)
}
func (siluOp) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (siluOp) Do(v ...gorgonia.Value) (gorgonia.Value, error) {
	x := v[0].(tensor.Tensor)
	in := x.Data().([]float32)
	out := make([]float32, len(in))
	for i, a := range in {
		out[i] = a / (1 + float32(math.Exp(float64(-a))))
	}
	return tensor.New(tensor.WithShape(x.Shape().Clone()...), tensor.WithBacking(out)), nil
}
func (siluOp) ReturnsPtr() bool      { return false }
func (siluOp) CallsExtern() bool     { return false }
func (siluOp) OverwritesInput() int  { return -1 }
func (siluOp) WriteHash(h hash.Hash) { fmt.Fprint(h, "silu") }
func (siluOp) Hashcode() uint32 {
	h := fnv.New32a()
	fmt.Fprint(h, "silu")
	return h.Sum32()
}
func (siluOp) String() string     { return "silu" }
func (siluOp) DiffWRT(int) []bool { return []bool{true} }
func (siluOp) Exec(k Kernels, out Buf, in []Buf) error {
	return execN(k, out, in, func(n int) { k.SiLU(out, in[0], n) })
}
func (siluOp) SymDiff(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	dx, err := gorgonia.ApplyOp(siluGradOp{}, in[0], grad)
	return gorgonia.Nodes{dx}, err
}

// execN calls f with the element count of out.
func execN(k Kernels, out Buf, in []Buf, f func(n int)) error {
	if k.Len(out) != k.Len(in[0]) {
		return fmt.Errorf("sizes %d and %d differ", k.Len(out), k.Len(in[0]))
	}
	f(k.Len(out))
	return nil
}

type siluGradOp struct{}

func (siluGradOp) Arity() int { return 2 }
func (siluGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(a, a, a)
}
func (siluGradOp) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (siluGradOp) Do(v ...gorgonia.Value) (gorgonia.Value, error) {
	x, dy := v[0].(tensor.Tensor), v[1].(tensor.Tensor)
	xs, ds := x.Data().([]float32), dy.Data().([]float32)
	out := make([]float32, len(xs))
	for i, a := range xs {
		s := 1 / (1 + float32(math.Exp(float64(-a))))
		out[i] = ds[i] * s * (1 + a*(1-s))
	}
	return tensor.New(tensor.WithShape(x.Shape().Clone()...), tensor.WithBacking(out)), nil
}
func (siluGradOp) ReturnsPtr() bool      { return false }
func (siluGradOp) CallsExtern() bool     { return false }
func (siluGradOp) OverwritesInput() int  { return -1 }
func (siluGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, "siluGrad") }
func (siluGradOp) Hashcode() uint32 {
	h := fnv.New32a()
	fmt.Fprint(h, "siluGrad")
	return h.Sum32()
}
func (siluGradOp) String() string { return "siluGrad" }
func (siluGradOp) Exec(k Kernels, out Buf, in []Buf) error {
	return execN(k, out, in, func(n int) { k.SiLUBackward(out, in[1], in[0], n) })
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

// testGraph builds cost = sum(c ⊙ c), c = 2 reshape(silu(x ⊙ w) + x) - v,
// and its gradients with respect to x, w and v.
func testGraph(t *testing.T) (g *gorgonia.ExprGraph, x, w, v, c, cost *gorgonia.Node, grads gorgonia.Nodes) {
	g = gorgonia.NewGraph()
	x = gorgonia.NewMatrix(g, tensor.Float32, gorgonia.WithShape(4, 6), gorgonia.WithName("x"))
	w = gorgonia.NewMatrix(g, tensor.Float32, gorgonia.WithShape(4, 6), gorgonia.WithName("w"))
	v = gorgonia.NewMatrix(g, tensor.Float32, gorgonia.WithShape(6, 4), gorgonia.WithName("v"))
	a := gorgonia.Must(gorgonia.HadamardProd(x, w))
	s := gorgonia.Must(gorgonia.ApplyOp(siluOp{}, a))
	b := gorgonia.Must(gorgonia.Add(s, x))
	r := gorgonia.Must(gorgonia.Reshape(b, tensor.Shape{6, 4}))
	m := gorgonia.Must(gorgonia.HadamardProd(r, gorgonia.NewConstant(float32(2))))
	c = gorgonia.Must(gorgonia.Sub(m, v))
	cost = gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(c, c))))
	grads, err := gorgonia.Grad(cost, x, w, v)
	if err != nil {
		t.Fatal(err)
	}
	return
}

func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i]-want[i])))
		den = math.Max(den, math.Abs(float64(want[i])))
	}
	return num / math.Max(den, 1e-30)
}

// TestMatchesTapeMachine: the executor on kernels.CPU gives the outputs
// and gradients of Gorgonia's TapeMachine on the same graph.
func TestMatchesTapeMachine(t *testing.T) { checkTape[[]float32](t, newCPU(t)) }

// TestMatchesTapeMachineCUDA repeats the check on cuda.Device (on the GPU,
// or on the CPU emulator of package cudatest).
func TestMatchesTapeMachineCUDA(t *testing.T) {
	d, err := cuda.Open(0, cuda.Options{Precision: "fp32"})
	if err != nil {
		t.Skipf("no GPU: %v", err)
	}
	defer d.Close()
	checkTape[cuda.Ptr](t, d)
}

func checkTape[B any](t *testing.T, ops kernels.Ops[B]) {
	g, x, w, v, c, cost, grads := testGraph(t)
	r := rand.New(rand.NewPCG(1, 2))
	xs, ws, vs := randData(r, 24), randData(r, 24), randData(r, 24)

	outs := append(gorgonia.Nodes{c, cost}, grads...)
	prog, err := Compile[B](ops, outs, Options{HostFallback: true})
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
	for run := 0; run < 2; run++ {
		if err := prog.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	got := map[*gorgonia.Node][]float32{}
	for _, n := range outs {
		buf := make([]float32, max(1, n.Shape().TotalSize()))
		if err := prog.Read(n, buf); err != nil {
			t.Fatal(err)
		}
		got[n] = buf
	}

	gorgonia.Let(x, tensor.New(tensor.WithShape(4, 6), tensor.WithBacking(append([]float32(nil), xs...))))
	gorgonia.Let(w, tensor.New(tensor.WithShape(4, 6), tensor.WithBacking(append([]float32(nil), ws...))))
	gorgonia.Let(v, tensor.New(tensor.WithShape(6, 4), tensor.WithBacking(append([]float32(nil), vs...))))
	vm := gorgonia.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	// The TapeMachine may overwrite intermediate values in place during the
	// backward pass, so c is checked against its formula instead.
	wantC := make([]float32, 24)
	for i := range wantC {
		a := xs[i] * ws[i]
		wantC[i] = 2*(a/(1+float32(math.Exp(float64(-a))))+xs[i]) - vs[i]
	}
	for i, n := range outs {
		want, err := hostData(n.Value())
		if err != nil {
			t.Fatal(err)
		}
		if n == c {
			want = wantC
		}
		if e := relErr(got[n], want); e > 1e-5 {
			t.Errorf("output %d (%s): relative error %.3g against the TapeMachine (tolerance 1e-5)", i, n.Name(), e)
		}
	}
	st := prog.Stats()
	t.Logf("stats %+v", st)
	if st.Host == 0 {
		t.Errorf("expected host fallback steps for Σ and the gradient's Repeat/SizeOf ops")
	}
}

// TestUnsupportedListsAll: without HostFallback, Compile names every op
// it cannot lower.
func TestUnsupportedListsAll(t *testing.T) {
	_, _, _, _, _, cost, _ := testGraph(t)
	_, err := Compile[[]float32](newCPU(t), gorgonia.Nodes{cost}, Options{})
	if err == nil || !strings.Contains(err.Error(), "no lowering") || !strings.Contains(err.Error(), "Σ") {
		t.Fatalf("Compile error = %v, want one listing Σ", err)
	}
}

// TestLivenessReuse: a chain of 20 SiLUs needs the input, the output and
// two alternating intermediates, not 21 buffers.
func TestLivenessReuse(t *testing.T) {
	g := gorgonia.NewGraph()
	x := gorgonia.NewMatrix(g, tensor.Float32, gorgonia.WithShape(4, 6), gorgonia.WithName("x"))
	h := x
	for i := 0; i < 20; i++ {
		h = gorgonia.Must(gorgonia.ApplyOp(siluOp{}, h))
	}
	cpu := newCPU(t)
	prog, err := Compile[[]float32](cpu, gorgonia.Nodes{h}, Options{})
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
	if e := relErr(got, want); e > 1e-6 {
		t.Fatalf("chain result relative error %.3g", e)
	}
}

func TestCompileErrors(t *testing.T) {
	if _, err := Compile[[]float32](newCPU(t), nil, Options{}); err == nil {
		t.Fatal("Compile with no outputs: want an error")
	}
	g := gorgonia.NewGraph()
	x := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(2, 2), gorgonia.WithName("x64"))
	y := gorgonia.Must(gorgonia.Add(x, x))
	if _, err := Compile[[]float32](newCPU(t), gorgonia.Nodes{y}, Options{}); err == nil || !strings.Contains(err.Error(), "float32") {
		t.Fatalf("float64 graph: error = %v, want one naming float32", err)
	}
}

func ExampleCompile() {
	g := gorgonia.NewGraph()
	x := gorgonia.NewVector(g, tensor.Float32, gorgonia.WithShape(3), gorgonia.WithName("x"))
	y := gorgonia.Must(gorgonia.Add(x, x))
	cpu, _ := kernels.NewCPU(kernels.CPUOptions{})
	prog, err := Compile[[]float32](cpu, gorgonia.Nodes{y}, Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer prog.Close()
	prog.SetInput(x, []float32{1, 2, 3})
	prog.Run(context.Background())
	out := make([]float32, 3)
	prog.Read(y, out)
	fmt.Println(out)
	// Output: [2 4 6]
}
