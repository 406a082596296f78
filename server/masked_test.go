package server

import (
	"context"
	"errors"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
)

// rowModel is a diffusion.Model whose output row depends only on its input
// row: out = 2x + t + 10y, with 2 output channels per input channel (like a
// learned-variance model). It records the batch sizes it saw.
type rowModel struct{ sizes *[]int }

func (m rowModel) Predict(_ context.Context, x diffusion.Batch, t []int, y []int) (diffusion.Batch, error) {
	*m.sizes = append(*m.sizes, x.N)
	out := diffusion.NewBatch(x.N, 2*x.C, x.H, x.W)
	d := x.C * x.H * x.W
	for r := 0; r < x.N; r++ {
		yv := 0
		if y != nil {
			yv = y[r]
		}
		for i := 0; i < d; i++ {
			v := 2*x.Data[r*d+i] + float32(t[r]) + float32(10*yv)
			out.Data[r*2*d+i] = v
			out.Data[r*2*d+d+i] = -v
		}
	}
	return out, nil
}

func TestMaskedModel(t *testing.T) {
	closed := make(chan struct{})
	close(closed)
	live, dead := Item{}, Item{Done: closed}
	tests := []struct {
		name    string
		items   []Item
		rows    int // x.N
		labels  bool
		wantRun []int // batch sizes the inner model sees
	}{
		{"all live", []Item{live, live, live}, 3, true, []int{3}},
		{"one dead", []Item{live, dead, live}, 3, true, []int{2}},
		{"guidance rows", []Item{dead, live}, 4, true, []int{2}},
		{"unconditional", []Item{live, dead, dead}, 3, false, []int{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const c, h, w = 1, 2, 3
			x := diffusion.NewBatch(tc.rows, c, h, w)
			for i := range x.Data {
				x.Data[i] = float32(i) * 0.25
			}
			ts := make([]int, tc.rows)
			var ys []int
			if tc.labels {
				ys = make([]int, tc.rows)
			}
			for r := range ts {
				ts[r] = 100 * r
				if ys != nil {
					ys[r] = r
				}
			}
			var sizes, refSizes []int
			got, err := maskedModel{inner: rowModel{&sizes}, items: tc.items}.Predict(context.Background(), x, ts, ys)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := rowModel{&refSizes}.Predict(context.Background(), x, ts, ys)
			if got.N != want.N || got.C != want.C || len(got.Data) != len(want.Data) {
				t.Fatalf("shape (%d,%d), want (%d,%d)", got.N, got.C, want.N, want.C)
			}
			od := len(want.Data) / want.N
			for r := 0; r < tc.rows; r++ {
				isDead := tc.items[r%len(tc.items)].dead()
				for i := 0; i < od; i++ {
					g, wv := got.Data[r*od+i], want.Data[r*od+i]
					if isDead {
						wv = 0
					}
					if g != wv {
						t.Fatalf("row %d value %d: %g, want %g", r, i, g, wv)
					}
				}
			}
			if len(sizes) != len(tc.wantRun) || sizes[0] != tc.wantRun[0] {
				t.Errorf("inner batch sizes %v, want %v", sizes, tc.wantRun)
			}
		})
	}
	t.Run("all dead", func(t *testing.T) {
		var sizes []int
		x := diffusion.NewBatch(2, 1, 1, 1)
		_, err := maskedModel{inner: rowModel{&sizes}, items: []Item{dead, dead}}.Predict(context.Background(), x, []int{0, 0}, nil)
		if !errors.Is(err, context.Canceled) || len(sizes) != 0 {
			t.Errorf("err %v, inner calls %v", err, sizes)
		}
	})
}
