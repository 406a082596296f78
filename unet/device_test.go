package unet

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/nn"
)

// trainMSE runs one TrainStep of m with L = sum_i (1/N) mean_j (out_ij -
// target_ij)^2 (the diffusion loss with epsilon target "target" and x0 =
// 0) and dropout seed, and returns the loss and the flat gradients.
func trainMSE[B any](t *testing.T, m *Net[B], x diffusion.Batch, ts []float64, ys []int, target []float32, seed uint64) (float32, []float32) {
	t.Helper()
	in, err := m.Inputs(x, ts, ys)
	if err != nil {
		t.Fatal(err)
	}
	D := len(target) / x.N
	coefs := make([]diffusion.LossCoefs, x.N)
	for i := range coefs {
		coefs[i] = diffusion.LossCoefs{TargetNoise: 1, MSE: 1}
	}
	e := m.Engine()
	err = e.TrainStep(context.Background(), Key(x), nn.TrainInputs{Net: in,
		Loss: kernels.DiffusionLossDims{N: x.N, D: D}, X0: make([]float32, len(target)), Noise: target,
		Coef: nn.LossCoefRows(coefs, nil), State: nn.State{Seed: seed}})
	if err != nil {
		t.Fatal(err)
	}
	lb, _, err := e.LossBuffers()
	if err != nil {
		t.Fatal(err)
	}
	ops := e.Ops()
	loss := make([]float32, 1)
	ops.Download(loss, lb)
	g, ok := e.GradBuffer()
	if !ok {
		t.Fatal("no gradient buffer after TrainStep")
	}
	grads := make([]float32, e.NumParams())
	ops.Download(grads, g)
	if err := ops.Sync(); err != nil {
		t.Fatal(err)
	}
	return loss[0], grads
}

// TestDevice runs the same class-conditional model (null class, dropout)
// on the CPU and on cuda.Device (a GPU, or the CPU emulator of package
// cudatest) in strict fp32: the outputs, the training loss and every
// parameter gradient agree within abs 1e-6 + rel 1e-4 elementwise.
func TestDevice(t *testing.T) {
	gpu, err := cuda.Open(0, cuda.Options{Precision: "fp32"})
	if err != nil {
		t.Skipf("no GPU or emulator: %v", err)
	}
	defer gpu.Close()
	cfg := tinyConfig()
	cfg.Dropout = 0.2
	cm, err := New(cfg, newCPU(t), 5)
	if err != nil {
		t.Fatal(err)
	}
	gm, err := NewOn[cuda.Ptr](cfg, gpu, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer gm.Close()
	r := rand.New(rand.NewPCG(8, 9))
	x := diffusion.NewBatch(3, 2, 8, 8)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	ts, ys := []float64{0, 400.5, 999}, []int{0, 2, -1}
	want, err := cm.Predict(context.Background(), x, ts, ys)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second call reuses the compiled program
		got, err := gm.Predict(context.Background(), x, ts, ys)
		if err != nil {
			t.Fatal(err)
		}
		checkClose(t, "forward", got.Data, want.Data, 1e-6, 1e-4)
	}
	target := make([]float32, len(want.Data))
	for i := range target {
		target[i] = float32(r.NormFloat64())
	}
	cl, cg := trainMSE(t, cm, x, ts, ys, target, 77)
	gl, gg := trainMSE(t, gm, x, ts, ys, target, 77)
	checkClose(t, "loss", []float32{gl}, []float32{cl}, 0, 1e-5)
	checkClose(t, "gradients", gg, cg, 1e-6, 1e-3)
	if _, err := gm.Predict(context.Background(), x, ts, []int{0, 9, 1}); err == nil {
		t.Error("bad label: no error")
	}
}

// checkClose compares elementwise: |got - want| <= abs + rel |want|.
func checkClose(t *testing.T, what string, got, want []float32, abs, rel float64) {
	t.Helper()
	bad := 0
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if !(abs64(g-w) <= abs+rel*abs64(w)) {
			if bad < 3 {
				t.Errorf("%s[%d] = %.7g, want %.7g (abs %g + rel %g)", what, i, g, w, abs, rel)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values out of tolerance", what, bad, len(want))
	}
}

func abs64(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// TestFusedRepeatedBlocks: a model whose resnet blocks repeat one shape
// (two per level, 16 and 32 channels: the nChw16c paths of the fused
// NormConv) predicts on oneDNN, with the inference options sampling uses,
// what the pure-Go CPU (the same ops without oneDNN's layouts) predicts,
// within 1e-5 relative L2: consecutive convolutions of one shape share
// oneDNN primitives, some binding the caller's nChw16c buffers and some
// reordering into their own.
func TestFusedRepeatedBlocks(t *testing.T) {
	fast, err := kernels.NewCPU(kernels.CPUOptions{BLAS: kernels.BLASDNNL, Conv: kernels.ConvDNNL, ConstWeights: true})
	if err != nil {
		t.Skipf("oneDNN not available: %v", err)
	}
	plain, err := kernels.NewCPU(kernels.CPUOptions{BLAS: kernels.BLASGonum})
	if err != nil {
		t.Fatal(err)
	}
	cfg := tinyConfig()
	cfg.BlockOutChannels = []int{16, 32}
	cfg.LayersPerBlock = 2
	cfg.SampleSize = 16
	r := rand.New(rand.NewPCG(21, 22))
	x := diffusion.NewBatch(4, 2, 16, 16)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	ts, ys := []float64{3, 250, 600, 999}, []int{0, 1, 2, -1}
	var outs [2][]float32
	for i, c := range []*kernels.CPU{plain, fast} {
		m, err := New(cfg, c, 7)
		if err != nil {
			t.Fatal(err)
		}
		for rep := 0; rep < 2; rep++ {
			out, err := m.Predict(context.Background(), x, ts, ys)
			if err != nil {
				t.Fatal(err)
			}
			outs[i] = out.Data
		}
		m.Close()
	}
	if e := relL2(outs[1], outs[0]); e > 1e-5 {
		t.Errorf("oneDNN against pure Go: relative L2 %.3g > 1e-5", e)
	}
}
