package dev

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/kernels"
)

// tinyConfig has every block kind at a size where float64-style finite
// differences on float32 still resolve.
func tinyConfig() UNetConfig {
	return UNetConfig{InChannels: 2, Channels: []int{8, 16}, Attention: []bool{false, true}, Layers: 1, Groups: 4, Eps: 1e-5}
}

func mse(pred, noise []float32) float64 {
	var s float64
	for i := range pred {
		d := float64(pred[i] - noise[i])
		s += d * d
	}
	return s / float64(len(pred))
}

// TestTrainGradFiniteDiff checks the tape's parameter gradients against
// central finite differences of the loss on the CPU, for a few entries of
// parameters from every kind of layer.
func TestTrainGradFiniteDiff(t *testing.T) {
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := tinyConfig()
	u, err := NewUNet[[]float32](cpu, cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTrainer(u, kernels.AdamWParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8})
	const n, hw = 2, 8
	r := rand.New(rand.NewPCG(11, 11))
	x, noise := randVec(r, n*cfg.InChannels*hw*hw), randVec(r, n*cfg.InChannels*hw*hw)
	ts := []int{10, 700}
	tr.ForwardBackward(x, noise, ts, hw, hw)
	loss := func() float64 {
		out := make([]float32, len(noise))
		u.Forward(out, x, ts, hw, hw)
		return mse(out, noise)
	}
	names := []string{
		"conv_in.weight", "time_embedding.linear_1.weight", "down_blocks.0.resnets.0.norm1.weight",
		"down_blocks.0.resnets.0.time_emb_proj.bias", "down_blocks.1.resnets.0.conv_shortcut.weight",
		"down_blocks.1.attentions.0.to_q.weight", "down_blocks.1.attentions.0.to_v.bias",
		"down_blocks.1.attentions.0.group_norm.bias", "mid_block.attentions.0.to_out.0.weight",
		"up_blocks.0.resnets.1.conv1.weight", "up_blocks.0.upsamplers.0.conv.bias", "conv_norm_out.weight", "conv_out.bias",
		"down_blocks.0.downsamplers.0.conv.weight",
	}
	for _, name := range names {
		p, g := u.params[name], tr.Grad(name)
		for _, i := range []int{0, len(p) / 2, len(p) - 1} {
			old := p[i]
			const h = 1e-2
			p[i] = old + h
			lp := loss()
			p[i] = old - h
			lm := loss()
			p[i] = old
			fd := (lp - lm) / (2 * h)
			if d := math.Abs(fd - float64(g[i])); d > 2e-3*math.Max(math.Abs(fd), 1e-2) {
				t.Errorf("%s[%d]: tape %.6g, finite difference %.6g", name, i, g[i], fd)
			}
		}
	}
}

// TestTrainGPUvsCPU compares one training step's gradients and updated
// parameters on the GPU (or the emulator) with the CPU.
func TestTrainGPUvsCPU(t *testing.T) {
	checkTrain(t, "small", smallConfig(), 2, 16)
}

// TestTrainGPUvsCPUCIFAR10 is the same check on the full ddpm-cifar10 UNet
// at batch 2 (GPU only).
func TestTrainGPUvsCPUCIFAR10(t *testing.T) {
	if emulated || testing.Short() {
		t.Skip("full CIFAR-10 UNet: GPU only")
	}
	checkTrain(t, "cifar10", CIFAR10(), 2, 32)
}

func checkTrain(t *testing.T, label string, cfg UNetConfig, n, hw int) {
	d := open(t, cuda.Options{Precision: "fp32"})
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := kernels.AdamWParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	uc, err := NewUNet[[]float32](cpu, cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	ug, err := NewUNet[cuda.Ptr](d, cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	tc, tg := NewTrainer(uc, h), NewTrainer(ug, h)
	defer tg.Close()
	r := rand.New(rand.NewPCG(6, 6))
	m := n * cfg.InChannels * hw * hw
	x, noise := randVec(r, m), randVec(r, m)
	ts := []int{3, 901}[:n]
	tc.Step(x, noise, ts, hw, hw)
	gx, gn := upload(d, x), upload(d, noise)
	tg.Step(gx, gn, ts, hw, hw)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	// A parameter whose true gradient is zero (the key bias: softmax is
	// invariant to a shift common to all keys) has rounding noise for a
	// gradient, which AdamW's g/sqrt(v) turns into full-size steps of
	// arbitrary sign; such parameters are skipped.
	global := 0.0
	for name := range uc.sizes {
		for _, v := range tc.Grad(name) {
			global = math.Max(global, math.Abs(float64(v)))
		}
	}
	worstG, worstP := 0.0, 0.0
	for name, size := range uc.sizes {
		mx := 0.0
		for _, v := range tc.Grad(name) {
			mx = math.Max(mx, math.Abs(float64(v)))
		}
		if mx < 1e-5*global {
			t.Logf("%s: gradient is rounding noise (max %.2g, all %.2g): skipped", name, mx, global)
			continue
		}
		eg := relErr(download(d, tg.Grad(name), size), tc.Grad(name))
		ep := maxAbsDiff(download(d, ug.params[name], size), uc.params[name])
		worstG, worstP = math.Max(worstG, eg), math.Max(worstP, ep)
		if eg > 1e-3 {
			t.Errorf("%s: gradient relative error %.3g > 1e-3", name, eg)
		}
	}
	t.Logf("train step %s, GPU vs CPU: worst gradient relative error %.3g, worst parameter difference %.3g", label, worstG, worstP)
	// AdamW's first step moves each entry by about lr * sign(g): entries
	// whose gradient is at rounding level may flip sign, never more.
	if worstP > 2.2*float64(h.LR) {
		t.Errorf("parameters after AdamW differ by %.3g > 2.2 lr", worstP)
	}
}

// BenchmarkLabUNetTrainStep times one ddpm-cifar10 training step at batch
// 128 (forward, MSE, backward, AdamW; TF32).
func BenchmarkLabUNetTrainStep(b *testing.B) {
	for _, v := range unetVariants {
		b.Run(v.name, func(b *testing.B) { benchTrain(b, v.opts) })
	}
}

func benchTrain(b *testing.B, opts cuda.Options) {
	d := open(b, opts)
	if emulated {
		b.Skip("timing on the CPU emulator means nothing")
	}
	u, err := NewUNet[cuda.Ptr](d, CIFAR10(), 1)
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	tr := NewTrainer(u, kernels.AdamWParams{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8})
	defer tr.Close()
	const n = 128
	r := rand.New(rand.NewPCG(8, 8))
	x, noise := upload(d, randVec(r, n*3*32*32)), upload(d, randVec(r, n*3*32*32))
	ts := make([]int, n)
	for i := range ts {
		ts[i] = r.IntN(1000)
	}
	tr.Step(x, noise, ts, 32, 32) // warm-up
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		tr.Step(x, noise, ts, 32, 32)
	}
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(time.Since(t0).Seconds()*1e3/float64(b.N), "ms/call")
}

func maxAbsDiff(a, b []float32) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}
