package adm

import (
	"context"
	"math"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
)

// constModel predicts a constant.
type constModel struct{ c int }

func (m constModel) Predict(_ context.Context, x diffusion.Batch, _ []float64, _ []int) (diffusion.Batch, error) {
	out := diffusion.NewBatch(x.N, m.c, x.H, x.W)
	for i := range out.Data {
		out.Data[i] = 1
	}
	return out, nil
}

// TestGuidedModel: eps' = eps - sqrt(1 - alphabar_t) g on the noise
// channels only, alphabar interpolated at fractional t, labels from the
// wrapper when given.
func TestGuidedModel(t *testing.T) {
	abar := []float64{0.9, 0.5, 0.1}
	var gotY []int
	guide := func(_ context.Context, x diffusion.Batch, _ []float64, y []int) (diffusion.Batch, error) {
		gotY = y
		g := diffusion.NewBatch(x.N, x.C, x.H, x.W)
		for i := range g.Data {
			g.Data[i] = 2
		}
		return g, nil
	}
	x := diffusion.NewBatch(2, 3, 2, 2)
	m := GuidedModel(constModel{6}, abar, guide, []int{4, 5})
	out, err := m.Predict(context.Background(), x, []float64{1, 0.5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want0 := 1 - math.Sqrt(1-0.5)*2
	want1 := 1 - math.Sqrt(1-0.7)*2
	if d := math.Abs(float64(out.Data[0]) - want0); d > 1e-6 {
		t.Errorf("eps'[0] = %v, want %v", out.Data[0], want0)
	}
	if out.Data[3*4] != 1 {
		t.Errorf("variance channel changed: %v", out.Data[3*4])
	}
	if d := math.Abs(float64(out.Data[6*4]) - want1); d > 1e-6 {
		t.Errorf("eps' of example 1 = %v, want %v", out.Data[6*4], want1)
	}
	if len(gotY) != 2 || gotY[0] != 4 {
		t.Errorf("guide got labels %v, want [4 5]", gotY)
	}
	if _, err := m.Predict(context.Background(), x, []float64{1, 3}, nil); err == nil {
		t.Error("t beyond the schedule: no error")
	}
	if _, err := GuidedModel(constModel{3}, abar, guide, nil).Predict(context.Background(), x, []float64{1, 1}, nil); err == nil {
		t.Error("no labels: no error")
	}
}
