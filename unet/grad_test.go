package unet

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
)

// tinyConfig has every block kind: ResNet blocks with and without a
// shortcut, attention down and up, down- and upsampling, the mid block,
// the time embedding and a class embedding with a null class.
func tinyConfig() Config {
	k, null := 4, 3
	return Config{SampleSize: 8, InChannels: 2, OutChannels: 4, TimeEmbeddingType: "positional", FlipSinToCos: true,
		LayersPerBlock: 1, MidBlockScaleFactor: 1, DownsamplePadding: 0, ActFn: "silu", NormNumGroups: 4, NormEps: 1e-5,
		ResnetTimeScaleShift: "default", BlockOutChannels: []int{8, 12},
		DownBlockTypes: []string{"DownBlock2D", "AttnDownBlock2D"}, UpBlockTypes: []string{"AttnUpBlock2D", "UpBlock2D"},
		NumClassEmbeds: &k, NullClass: &null}
}

// TestTrainStepGradientsFiniteDifference checks the gradients of a
// training step (L = sum_i (1/N) mean_j (out_ij - target_ij)^2, through
// the diffusion loss kernel) against central finite differences of
// Predict for entries of EVERY parameter (so every block: time/class
// embedding, ResNet blocks, attention, down/upsampling, output norm and
// conv).
func TestTrainStepGradientsFiniteDifference(t *testing.T) {
	m, err := New(tinyConfig(), newCPU(t), 7)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	x := diffusion.NewBatch(2, 2, 8, 8)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	ts, ys := []float64{3, 700}, []int{1, -1}
	target := make([]float32, 2*4*8*8)
	for i := range target {
		target[i] = float32(r.NormFloat64())
	}
	lossOf := func(out []float32) float64 {
		var s float64
		D := len(out) / 2
		for i, v := range out {
			d := float64(v) - float64(target[i])
			s += d * d / float64(D) / 2
		}
		return s
	}
	ctx := context.Background()
	loss, grads := trainMSE(t, m, x, ts, ys, target, 0)
	eval := func() float64 {
		o, err := m.Predict(ctx, x, ts, ys)
		if err != nil {
			t.Fatal(err)
		}
		return lossOf(o.Data)
	}
	if l := eval(); math.Abs(l-float64(loss)) > 1e-5*math.Abs(l) {
		t.Fatalf("training loss %v != loss of Predict %v", loss, l)
	}
	e := m.Engine()
	flat := make([]float32, e.NumParams())
	if err := e.ReadParams(flat); err != nil {
		t.Fatal(err)
	}
	set := func(i int, v float32) {
		flat[i] = v
		if err := e.WriteParams(flat); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range e.Params() {
		t.Run(p.Name, func(t *testing.T) {
			for k := 0; k < 3; k++ {
				i := p.Offset + r.IntN(p.Size)
				old := flat[i]
				const h = 1e-2
				set(i, old+h)
				lp := eval()
				set(i, old-h)
				lm := eval()
				set(i, old)
				fd := (lp - lm) / (2 * h)
				g := float64(grads[i])
				// float32 network, float64 sums: abs 2e-4 + rel 3e-2.
				if math.Abs(g-fd) > 2e-4+3e-2*math.Max(math.Abs(g), math.Abs(fd)) {
					t.Errorf("%s[%d]: gradient %.6g, finite difference %.6g", p.Name, i-p.Offset, g, fd)
				}
			}
		})
	}
}

func TestPresets(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params int
	}{{"ddpm-cifar10", 35746307}, {"mnist", 0}} {
		cfg, err := Preset(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		m, err := New(cfg, newCPU(t), 1)
		if err != nil {
			t.Fatal(err)
		}
		if tc.params != 0 && m.NumParams() != tc.params {
			t.Errorf("%s: %d parameters, want %d", tc.name, m.NumParams(), tc.params)
		}
		t.Logf("%s: %d parameters", tc.name, m.NumParams())
	}
	if _, err := Preset("nope"); err == nil {
		t.Error("unknown preset: no error")
	}
}

func TestInputErrors(t *testing.T) {
	m, err := New(tinyConfig(), newCPU(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good := diffusion.NewBatch(1, 2, 8, 8)
	for _, tc := range []struct {
		name string
		x    diffusion.Batch
		t    []float64
		y    []int
	}{
		{"channels", diffusion.NewBatch(1, 3, 8, 8), []float64{1}, []int{0}},
		{"size", diffusion.NewBatch(1, 2, 7, 7), []float64{1}, []int{0}},
		{"timesteps", good, []float64{1, 2}, []int{0}},
		{"negative t", good, []float64{-1}, []int{0}},
		{"NaN t", good, []float64{math.NaN()}, []int{0}},
		{"no labels", good, []float64{1}, nil},
		{"label range", good, []float64{1}, []int{4}},
		{"null label by index", good, []float64{1}, []int{3}},
	} {
		if _, err := m.Predict(ctx, tc.x, tc.t, tc.y); err == nil {
			t.Errorf("%s: no error", tc.name)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	bad := tinyConfig()
	bad.ActFn = "gelu"
	if _, err := New(bad, newCPU(t), 1); err == nil {
		t.Error("act_fn gelu: no error")
	}
}

// TestCIFAR10Forward runs the ddpm-cifar10 preset (google/ddpm-cifar10-32's
// architecture) on one image: output shape and finiteness.
func TestCIFAR10Forward(t *testing.T) {
	if testing.Short() {
		t.Skip("ddpm-cifar10 forward (35.7M parameters) skipped in -short")
	}
	cfg, err := Preset("ddpm-cifar10")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, newCPU(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	x := diffusion.NewBatch(1, 3, 32, 32)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	out, err := m.Predict(context.Background(), x, []float64{500}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.N != 1 || out.C != 3 || out.H != 32 || out.W != 32 || len(out.Data) != 3*32*32 {
		t.Fatalf("output %dx%dx%dx%d (%d values), want 1x3x32x32", out.N, out.C, out.H, out.W, len(out.Data))
	}
	for i, v := range out.Data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("output[%d] = %v", i, v)
		}
	}
}

// TestTrainStepGradientsDoNotAccumulate checks that the gradient buffer
// holds only the last step's gradient: two identical steps give identical
// gradients, and dropout masks follow the seed.
func TestTrainStepGradientsDoNotAccumulate(t *testing.T) {
	cfg := tinyConfig()
	cfg.Dropout = 0.3
	m, err := New(cfg, newCPU(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	x := diffusion.NewBatch(2, 2, 8, 8)
	for i := range x.Data {
		x.Data[i] = float32(i%11)/5 - 1
	}
	target := make([]float32, 2*4*8*8)
	l1, g1 := trainMSE(t, m, x, []float64{10, 20}, []int{0, 2}, target, 9)
	l2, g2 := trainMSE(t, m, x, []float64{10, 20}, []int{0, 2}, target, 9)
	l3, _ := trainMSE(t, m, x, []float64{10, 20}, []int{0, 2}, target, 10)
	if l1 != l2 {
		t.Errorf("same seed, losses %v and %v", l1, l2)
	}
	if l1 == l3 {
		t.Errorf("different dropout seeds gave the same loss %v", l1)
	}
	if !slices.Equal(g1, g2) {
		t.Fatal("the gradient changed between identical steps (accumulating?)")
	}
}
