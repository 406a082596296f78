package server

import (
	"context"
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion"
)

// maskedModel wraps a diffusion.Model so that the rows of a batch whose
// Item is dead (its client went away) cost nothing: Predict runs the inner
// model on the live rows only and answers zeros for the others. The sampler
// keeps its batch shape, and the other items' results are unchanged,
// because a UNet treats the rows of a batch independently. When the batch
// has k*len(items) rows (classifier-free guidance stacks conditional and
// unconditional copies), row r belongs to item r mod len(items).
type maskedModel struct {
	inner diffusion.Model
	items []Item
}

// Predict implements diffusion.Model.
func (m maskedModel) Predict(ctx context.Context, x diffusion.Batch, t []int, y []int) (diffusion.Batch, error) {
	n := len(m.items)
	if n == 0 || x.N%n != 0 || len(t) != x.N || (y != nil && len(y) != x.N) || len(x.Data) != x.Len() {
		return m.inner.Predict(ctx, x, t, y)
	}
	var live []int
	for r := 0; r < x.N; r++ {
		if !m.items[r%n].dead() {
			live = append(live, r)
		}
	}
	if len(live) == x.N {
		return m.inner.Predict(ctx, x, t, y)
	}
	if len(live) == 0 {
		return diffusion.Batch{}, fmt.Errorf("masked model: every item of the batch was cancelled: %w", context.Canceled)
	}
	d := x.C * x.H * x.W
	sub := diffusion.NewBatch(len(live), x.C, x.H, x.W)
	subT := make([]int, len(live))
	var subY []int
	if y != nil {
		subY = make([]int, len(live))
	}
	for i, r := range live {
		copy(sub.Data[i*d:(i+1)*d], x.Data[r*d:(r+1)*d])
		subT[i] = t[r]
		if y != nil {
			subY[i] = y[r]
		}
	}
	out, err := m.inner.Predict(ctx, sub, subT, subY)
	if err != nil {
		return out, err
	}
	if out.N != len(live) || out.H != x.H || out.W != x.W {
		return diffusion.Batch{}, fmt.Errorf("masked model: inner model answered (%d,%d,%d,%d) for (%d,%d,%d,%d)",
			out.N, out.C, out.H, out.W, len(live), x.C, x.H, x.W)
	}
	full := diffusion.NewBatch(x.N, out.C, x.H, x.W)
	od := out.C * x.H * x.W
	for i, r := range live {
		copy(full.Data[r*od:(r+1)*od], out.Data[i*od:(i+1)*od])
	}
	return full, nil
}
