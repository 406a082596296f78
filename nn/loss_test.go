package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/schedule"
)

// TestDiffusionLossMatchesTrainingLoss: the loss kernel fed by
// diffusion.LossCoefs (via LossCoefRows) gives diffusion.TrainingLoss's
// per-example terms, weighted batch loss and gradient, for every
// objective, parameterisation and variance, timesteps 0 (the decoder
// term) included.
func TestDiffusionLossMatchesTrainingLoss(t *testing.T) {
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, loss := range []diffusion.Loss{diffusion.LossSimple, diffusion.LossVLB, diffusion.LossHybrid} {
		for _, v := range []diffusion.Variance{diffusion.FixedSmall, diffusion.FixedLarge, diffusion.Learned, diffusion.LearnedRange} {
			for _, pred := range []diffusion.Prediction{diffusion.PredictEpsilon, diffusion.PredictX0, diffusion.PredictV} {
				for _, sch := range []schedule.Kind{schedule.Linear, schedule.Cosine} {
					name := loss.String() + "/" + v.String() + "/" + pred.String() + "/" + sch.String()
					t.Run(name, func(t *testing.T) { checkLoss(t, cpu, loss, v, pred, sch) })
				}
			}
		}
	}
}

func checkLoss(t *testing.T, cpu *kernels.CPU, loss diffusion.Loss, v diffusion.Variance, pred diffusion.Prediction, sch schedule.Kind) {
	cfg := diffusion.DefaultConfig()
	cfg.Loss, cfg.Variance, cfg.Prediction, cfg.Schedule = loss, v, pred, sch
	d, err := diffusion.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const N, C, H, W = 4, 1, 4, 4
	D := C * H * W
	r := rand.New(rand.NewPCG(uint64(loss)*16+uint64(v)*4+uint64(pred), uint64(sch)))
	x0, noise := diffusion.NewBatch(N, C, H, W), diffusion.NewBatch(N, C, H, W)
	for i := range x0.Data {
		x0.Data[i] = float32(r.IntN(256))/127.5 - 1
		noise.Data[i] = float32(r.NormFloat64())
	}
	oc := d.OutChannels(C)
	out := diffusion.NewBatch(N, oc, H, W)
	for i := range out.Data {
		out.Data[i] = float32(0.7 * r.NormFloat64())
	}
	ts := []int{0, 1, 500, 999}
	w := []float64{1, 0.5, 2, 1.5}
	terms, dout, err := d.TrainingLoss(out, x0, noise, ts, w)
	if err != nil {
		t.Fatal(err)
	}
	coefs := make([]diffusion.LossCoefs, N)
	for i, tt := range ts {
		if coefs[i], err = d.LossCoefs(tt); err != nil {
			t.Fatal(err)
		}
	}
	dims := kernels.DiffusionLossDims{N: N, D: D, Learned: v.IsLearned(), Range: v == diffusion.LearnedRange}
	gl, gt, gd := make([]float32, 1), make([]float32, 3*N), make([]float32, len(out.Data))
	cpu.DiffusionLoss(gl, gt, gd, out.Data, x0.Data, noise.Data, LossCoefRows(coefs, w), dims)
	if err := cpu.Sync(); err != nil {
		t.Fatal(err)
	}
	var want float64
	for i := range N {
		want += w[i] * terms.Loss[i] / N
		for k, pair := range [][2]float64{{float64(gt[3*i]), terms.Loss[i]}, {float64(gt[3*i+1]), terms.MSE[i]}, {float64(gt[3*i+2]), terms.VB[i]}} {
			if math.Abs(pair[0]-pair[1]) > 1e-6+1e-5*math.Abs(pair[1]) {
				t.Errorf("example %d (t=%d) term %d: kernel %.7g, TrainingLoss %.7g", i, ts[i], k, pair[0], pair[1])
			}
		}
	}
	if math.Abs(float64(gl[0])-want) > 1e-6+1e-5*math.Abs(want) {
		t.Errorf("batch loss: kernel %.7g, TrainingLoss %.7g", gl[0], want)
	}
	// The kernel reads its constants as float32 rows; where the decoder
	// term is steep (t = 0, scale ~ 0.01 against bins 1/255 wide) their
	// rounding moves a gradient by up to ~4e-4 of its size, so: abs 1e-4
	// of the largest gradient + rel 1e-3.
	var big float64
	for _, g := range dout {
		big = math.Max(big, math.Abs(float64(g)))
	}
	for j := range dout {
		if g, w := float64(gd[j]), float64(dout[j]); math.Abs(g-w) > 1e-4*big+1e-3*math.Abs(w) {
			t.Fatalf("dout[%d]: kernel %.7g, TrainingLoss %.7g", j, g, w)
		}
	}
}
