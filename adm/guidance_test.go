package adm

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
)

// TestClassifierGradientFiniteDifference checks the guidance gradient
// against central differences of sum_i log softmax(logits(x_i, t_i))[y_i]
// along random directions.
func TestClassifierGradientFiniteDifference(t *testing.T) {
	cfg, err := ParseFlags("--image_size 8 --num_classes 4 --classifier_width 64 --classifier_depth 1 " +
		"--classifier_channel_mult 1,1 --classifier_attention_resolutions 4 --classifier_pool attention")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, newCPU(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	x := diffusion.NewBatch(2, 3, 8, 8)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	ts, ys := []float64{20, 640.5}, []int{1, 3}
	logp := func(x diffusion.Batch) float64 {
		logits, err := m.Logits(ctx, x, ts)
		if err != nil {
			t.Fatal(err)
		}
		lp := LogSoftmax(logits, 4)
		return lp[ys[0]] + lp[4+ys[1]]
	}
	const scale = 2.5
	g, err := ClassifierGradient(ctx, m, x, ts, ys, scale)
	if err != nil {
		t.Fatal(err)
	}
	for dir := range 4 {
		v := make([]float32, len(x.Data))
		want := 0.0
		for i := range v {
			v[i] = float32(r.NormFloat64())
			want += float64(v[i]) * float64(g.Data[i]) / scale
		}
		const eps = 1e-2
		shift := func(s float64) diffusion.Batch {
			y := diffusion.NewBatch(x.N, x.C, x.H, x.W)
			for i := range y.Data {
				y.Data[i] = x.Data[i] + float32(s)*v[i]
			}
			return y
		}
		got := (logp(shift(eps)) - logp(shift(-eps))) / (2 * eps)
		t.Logf("direction %d: finite difference %.6f, gradient %.6f", dir, got, want)
		if math.Abs(got-want) > 2e-2*math.Abs(want)+2e-3 {
			t.Errorf("direction %d: finite difference %v, <gradient, v> %v", dir, got, want)
		}
	}
	if _, err := ClassifierGradient(ctx, m, x, ts, []int{1, 4}, 1); err == nil {
		t.Error("label 4 of 4 classes: no error")
	}
}
