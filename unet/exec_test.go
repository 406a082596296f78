package unet

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/gexec"
	"github.com/ddpm-go/ddpm/kernels"

	G "gorgonia.org/gorgonia"
)

// TestGexecMatchesTapeMachine runs a training graph (every op, dropout on)
// through package gexec on kernels.CPU and checks the output and every
// parameter gradient against Model.Step on Gorgonia's TapeMachine.
func TestGexecMatchesTapeMachine(t *testing.T) {
	cpu := newCPU(t)
	checkGexec[[]float32](t, cpu, cpu, 0)
}

// TestGexecCUDA repeats the check with the graph on cuda.Device (a GPU, or
// the CPU emulator of package cudatest) against the TapeMachine on the CPU.
func TestGexecCUDA(t *testing.T) {
	d, err := cuda.Open(0, cuda.Options{Precision: "fp32"})
	if err != nil {
		t.Skipf("no GPU or emulator: %v", err)
	}
	defer d.Close()
	checkGexec[cuda.Ptr](t, newCPU(t), d, 1e-4)
}

// checkGexec runs the training graph through gexec on ops and compares
// with Step on cpu: exactly when tol is 0, else within relative L2 tol.
func checkGexec[B any](t *testing.T, cpu *kernels.CPU, ops kernels.Ops[B], tol float64) {
	cfg := tinyConfig()
	cfg.Dropout = 0.2
	m, err := New(cfg, cpu, 11)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(4, 5))
	x := diffusion.NewBatch(2, 2, 8, 8)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	ts, ys := []int{5, 900}, []int{2, -1}
	R := make([]float32, 2*4*8*8)
	for i := range R {
		R[i] = float32(r.NormFloat64())
	}
	var gotOut []float32
	lossFn := func(out, dout []float32) (float64, error) {
		gotOut = append(gotOut[:0], out...)
		var s float64
		for i, v := range out {
			s += float64(v) * float64(R[i])
		}
		copy(dout, R)
		return s, nil
	}
	const seed = 77
	want, err := m.Step(context.Background(), x, ts, ys, seed, func(out diffusion.Batch, dout []float32) (float64, error) {
		return lossFn(out.Data, dout)
	})
	if err != nil {
		t.Fatal(err)
	}
	wantOut := append([]float32(nil), gotOut...)
	params := m.Params()
	wantGrads := make([][]float32, len(params))
	for i, p := range params {
		wantGrads[i] = append([]float32(nil), p.Grad...)
	}

	g, err := m.Graph(2, 8, 8, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.DropoutMasks) == 0 || g.Loss == nil || len(g.Grads) != len(params) || g.ClassOneHot == nil {
		t.Fatalf("graph: %d masks, loss %v, %d grads for %d params", len(g.DropoutMasks), g.Loss, len(g.Grads), len(params))
	}
	g.SetLoss(lossFn)
	clear(g.gr.loss.Grad) // the executor must run the loss itself
	gotOut = nil
	prog, err := gexec.Compile[B](ops, append([]*G.Node{g.Out}, g.Grads...), gexec.Options{HostFallback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	if st := prog.Stats(); st.Host != 2 {
		t.Errorf("%d nodes ran on the host, want only the external loss and its gradient", st.Host)
	}
	in, err := m.EncodeInputs(x, ts, ys)
	if err != nil {
		t.Fatal(err)
	}
	set := func(n *G.Node, v []float32) {
		t.Helper()
		if err := prog.SetInput(n, v); err != nil {
			t.Fatal(err)
		}
	}
	set(g.X, in.X)
	set(g.TEmb, in.TEmb)
	set(g.ClassOneHot, in.ClassOneHot)
	for i, p := range params {
		set(g.Params[i], p.Value)
	}
	masks := make([][]float32, len(g.DropoutMasks))
	for i, n := range g.DropoutMasks {
		masks[i] = make([]float32, n.Shape().TotalSize())
	}
	m.FillDropoutMasks(seed, masks)
	for i, n := range g.DropoutMasks {
		set(n, masks[i])
	}
	if err := prog.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(wantOut))
	if err := prog.Read(g.Out, out); err != nil {
		t.Fatal(err)
	}
	if e := relL2(out, wantOut); !(e <= tol) {
		t.Errorf("output: relative L2 difference %.3g", e)
	}
	worst := 0.0
	for i, p := range params {
		got := make([]float32, len(p.Grad))
		if err := prog.Read(g.Grads[i], got); err != nil {
			t.Fatal(err)
		}
		e := relL2Floor(got, wantGrads[i], 1e-3)
		if !(e <= 10*tol) { // also catches NaN
			t.Errorf("grad %s: relative L2 difference %.3g", p.Name, e)
		}
		worst = max(worst, e)
	}
	t.Logf("loss %.6g; worst gradient relative L2 difference %.3g over %d parameters; %+v", want, worst, len(params), prog.Stats())
}

// relL2Floor is ||got-want|| / max(||want||, floor): the relative error,
// with an absolute floor for gradients that are zero in exact arithmetic
// (attention's key bias: softmax ignores a constant added to every score)
// and so hold only rounding noise.
func relL2Floor(got, want []float32, floor float64) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num) / math.Max(math.Sqrt(den), floor)
}
