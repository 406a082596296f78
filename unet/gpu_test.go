package unet

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/npy"
	"github.com/ddpm-go/ddpm/weights"
)

// The whole-model GPU checks of bench/gpu-check.sh: the real UNet on
// cuda.Device (or its CPU emulator) against the CPU backend, the forward
// pass and one training step, on the diffusers fixture and on the DDPM
// CIFAR-10 config, in each precision. Strict fp32 is compared
// elementwise; the 16-bit modes by relative L2 error against fp32's
// bound scaled by their unit roundoff (16-bit inputs of every GEMM and
// convolution, fp32 everything else).

// gpuFixtureDir is $DDPM_UNET_FIXTURE (gpu-check carries the fixture
// there) or the shared fixture.
func gpuFixtureDir(t *testing.T) string {
	if d := os.Getenv("DDPM_UNET_FIXTURE"); d != "" {
		return d
	}
	return fixtureDir(t)
}

// openGPU opens GPU 0 (or the emulator) in precision p, or skips.
func openGPU(t *testing.T, p string, graphs bool) (*cuda.Device, bool) {
	t.Helper()
	d, err := cuda.Open(0, cuda.Options{Precision: p})
	if err != nil {
		t.Skipf("no GPU or emulator: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d, d.Info().Name == "ddpm CPU emulator"
}

// modelBound is the relative L2 error a whole forward pass may have in
// precision p against the CPU: 1e-5 in fp32, else 20 unit roundoffs of
// the mode (the emulator, which rounds GEMM inputs as each mode's tensor
// cores do, measured 1.7 on the fixture: tf32 8.4e-4, bf16 6.8e-3, fp16
// 8.6e-4).
func modelBound(p cuda.Precision) float64 {
	if p == cuda.FP32 {
		return 1e-5
	}
	return 20 * p.UnitRoundoff()
}

// forwardGraphs runs gm (on GraphOps g) four times on the same batch, as
// a sampling loop does (eager, eager, captured, replayed), checks every
// output against want within bound, and returns the last relative error.
func forwardGraphs(t *testing.T, gm *Net[cuda.Ptr], g *cuda.GraphOps, x diffusion.Batch, ts []float64, ys []int, want []float32, bound float64) (float64, []float32) {
	t.Helper()
	var e float64
	var out []float32
	for i := 0; i < 4; i++ {
		got, err := gm.Predict(context.Background(), x, ts, ys)
		if err != nil {
			t.Fatal(err)
		}
		if e = relL2(got.Data, want); e > bound {
			t.Errorf("call %d: relative L2 error against the CPU %.3g > %.3g", i, e, bound)
		}
		out = got.Data
	}
	if st := g.Stats(); st.Replayed == 0 || st.Failed != 0 {
		t.Errorf("graph stats %+v: the fourth forward pass should be a graph launch", st)
	}
	return e, out
}

// TestGPUPrecisions runs the tiny class-conditional UNet through
// cuda.GraphOps in every precision against the CPU (relative L2 error
// within modelBound), each forward four times so the last is a graph
// launch.
func TestGPUPrecisions(t *testing.T) {
	cfg := tinyConfig()
	cm, err := New(cfg, newCPU(t), 5)
	if err != nil {
		t.Fatal(err)
	}
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
	for _, prec := range []string{"fp32", "tf32", "bf16", "fp16"} {
		t.Run(prec, func(t *testing.T) {
			d, _ := openGPU(t, prec, true)
			g := cuda.NewGraphOps(d)
			gm, err := NewOn[cuda.Ptr](cfg, g, 5)
			if err != nil {
				t.Fatal(err)
			}
			defer gm.Close()
			bound := modelBound(d.Precision())
			e, _ := forwardGraphs(t, gm, g, x, ts, ys, want.Data, bound)
			t.Logf("tiny UNet %s through graphs, GPU vs CPU: relative L2 error %.3g (bound %.2g); %+v", prec, e, bound, g.Stats())
		})
	}
}

func readFixtureBatch(t *testing.T, dir string) (diffusion.Batch, []float64, []float32) {
	t.Helper()
	xa, err := npy.ReadFile(filepath.Join(dir, "x.npy"))
	if err != nil {
		t.Fatal(err)
	}
	ta, err := npy.ReadFile(filepath.Join(dir, "timesteps.npy"))
	if err != nil {
		t.Fatal(err)
	}
	oa, err := npy.ReadFile(filepath.Join(dir, "out.npy"))
	if err != nil {
		t.Fatal(err)
	}
	ts64, err := ta.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	ts := make([]float64, len(ts64))
	for i, v := range ts64 {
		ts[i] = float64(v)
	}
	return diffusion.Batch{N: xa.Shape[0], C: xa.Shape[1], H: xa.Shape[2], W: xa.Shape[3], Data: xa.Float32s()}, ts, oa.Float32s()
}

// TestGPUFixture runs the diffusers fixture (1.1M parameters) on the GPU
// in every precision, through cuda.GraphOps (the sampling path): the
// forward pass against the CPU and against diffusers' own output, four
// times (the last a graph launch), and in fp32 a training step's loss
// and every gradient against the CPU. About a minute on the emulator, so
// there only with DDPM_GPU_SLOW=1.
func TestGPUFixture(t *testing.T) {
	if _, emu := openGPU(t, "fp32", false); emu && os.Getenv("DDPM_GPU_SLOW") != "1" {
		t.Skip("about a minute on the emulator (DDPM_GPU_SLOW=1 runs it); TestGPUPrecisions covers the same paths")
	}
	dir := gpuFixtureDir(t)
	src, err := weights.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := FromSource(src, newCPU(t))
	if err != nil {
		t.Fatal(err)
	}
	x, ts, diffusersOut := readFixtureBatch(t, dir)
	want, err := cm.Predict(context.Background(), x, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, prec := range []string{"fp32", "tf32", "bf16", "fp16"} {
		t.Run(prec, func(t *testing.T) {
			d, _ := openGPU(t, prec, true)
			g := cuda.NewGraphOps(d)
			gm, err := FromSourceOn[cuda.Ptr](src, g)
			if err != nil {
				t.Fatal(err)
			}
			defer gm.Close()
			bound := modelBound(d.Precision())
			e, got := forwardGraphs(t, gm, g, x, ts, nil, want.Data, bound)
			t.Logf("whole-UNet forward fixture %s, GPU vs CPU: relative L2 error %.3g (bound %.2g); vs diffusers %.3g; graphs %+v",
				prec, e, bound, relL2(got, diffusersOut), g.Stats())
			if prec != "fp32" {
				return
			}
			checkClose(t, "forward (fp32)", got, want.Data, 1e-5*rmsOf(want.Data), 1e-4)
			target := make([]float32, len(want.Data))
			r := rand.New(rand.NewPCG(4, 4))
			for i := range target {
				target[i] = float32(r.NormFloat64())
			}
			cl, cg := trainMSE(t, cm, x, ts, nil, target, 5)
			gl, gg := trainMSE(t, gm, x, ts, nil, target, 5)
			checkClose(t, "loss", []float32{gl}, []float32{cl}, 0, 1e-5)
			checkClose(t, "gradients", gg, cg, 1e-4*rmsOf(cg), 1e-3)
			t.Logf("train step fixture fp32, GPU vs CPU: loss %.7g vs %.7g, gradient relative L2 %.3g", gl, cl, relL2(gg, cg))
		})
	}
}

// TestGPUCIFAR10 is TestGPUFixture's fp32 checks on the DDPM CIFAR-10
// UNet (35.7M parameters, random weights) at batch 2: the forward pass
// elementwise against the CPU and one training step's gradients. Too slow
// for the emulator unless DDPM_GPU_SLOW=1.
func TestGPUCIFAR10(t *testing.T) {
	d, emu := openGPU(t, "fp32", false)
	if emu && os.Getenv("DDPM_GPU_SLOW") != "1" {
		t.Skip("the CIFAR-10 UNet takes minutes on the emulator (DDPM_GPU_SLOW=1 runs it)")
	}
	cfg, err := Preset("ddpm-cifar10")
	if err != nil {
		t.Fatal(err)
	}
	cm, err := New(cfg, newCPU(t), 9)
	if err != nil {
		t.Fatal(err)
	}
	gm, err := NewOn[cuda.Ptr](cfg, d, 9)
	if err != nil {
		t.Fatal(err)
	}
	defer gm.Close()
	r := rand.New(rand.NewPCG(6, 6))
	x := diffusion.NewBatch(2, 3, 32, 32)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	ts := []float64{10, 900}
	want, err := cm.Predict(context.Background(), x, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := gm.Predict(context.Background(), x, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkClose(t, "forward", got.Data, want.Data, 1e-5*rmsOf(want.Data), 1e-4)
	t.Logf("whole-UNet forward cifar10 fp32, GPU vs CPU: relative L2 error %.3g", relL2(got.Data, want.Data))
	target := make([]float32, len(want.Data))
	for i := range target {
		target[i] = float32(r.NormFloat64())
	}
	cl, cg := trainMSE(t, cm, x, ts, nil, target, 5)
	gl, gg := trainMSE(t, gm, x, ts, nil, target, 5)
	checkClose(t, "loss", []float32{gl}, []float32{cl}, 0, 1e-5)
	checkClose(t, "gradients", gg, cg, 1e-4*rmsOf(cg), 1e-3)
	t.Logf("train step cifar10 fp32, GPU vs CPU: loss %.7g vs %.7g, gradient relative L2 %.3g", gl, cl, relL2(gg, cg))
}

func rmsOf(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s / float64(max(len(v), 1)))
}
