package weights

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
)

// Average returns the element-wise mean of the tensors of models that
// share one architecture: a uniform "model soup" (Wortsman et al. 2022),
// which for fine-tunes of one model often generalises better than each
// of them. The UNet and diffusion configs must agree (as JSON values)
// and so must the tensor names and shapes; the result takes the first
// model's configs and class names. The mean is accumulated in float64.
func Average(models ...*Model) (*Model, error) {
	if len(models) < 2 {
		return nil, fmt.Errorf("weights: average: %d models, need at least 2", len(models))
	}
	first := models[0]
	for i, m := range models[1:] {
		if err := sameArchitecture(first, m); err != nil {
			return nil, fmt.Errorf("weights: average: model %d and model 0: %w", i+1, err)
		}
	}
	out := &Model{UNetConfig: first.UNetConfig, DiffusionConfig: first.DiffusionConfig, SchedulerConfig: first.SchedulerConfig,
		ClassNames: first.ClassNames, Tensors: make(map[string]Tensor, len(first.Tensors))}
	scale := 1 / float64(len(models))
	sum := []float64{}
	for name, t := range first.Tensors {
		sum = slices.Grow(sum[:0], len(t.Data))[:len(t.Data)]
		clear(sum)
		for _, m := range models {
			for j, v := range m.Tensors[name].Data {
				sum[j] += float64(v)
			}
		}
		data := make([]float32, len(sum))
		for j, s := range sum {
			data[j] = float32(s * scale)
			if math.IsInf(float64(data[j]), 0) || math.IsNaN(float64(data[j])) {
				return nil, fmt.Errorf("weights: average: tensor %s element %d averages to %v: a model holds a value that is not finite", name, j, data[j])
			}
		}
		out.Tensors[name] = Tensor{DType: "F32", Shape: slices.Clone(t.Shape), Data: data}
	}
	return out, nil
}

// sameArchitecture reports how b's configs or tensors differ from a's.
func sameArchitecture(a, b *Model) error {
	for _, c := range []struct {
		name string
		x, y json.RawMessage
	}{{"UNet config", a.UNetConfig, b.UNetConfig}, {"diffusion config", a.DiffusionConfig, b.DiffusionConfig}} {
		if !sameJSON(c.x, c.y) {
			return fmt.Errorf("the %s differs", c.name)
		}
	}
	if len(a.Tensors) != len(b.Tensors) {
		return fmt.Errorf("%d tensors against %d", len(b.Tensors), len(a.Tensors))
	}
	for name, ta := range a.Tensors {
		tb, ok := b.Tensors[name]
		switch {
		case !ok:
			return fmt.Errorf("no tensor %s", name)
		case !slices.Equal(ta.Shape, tb.Shape) || len(ta.Data) != len(tb.Data):
			return fmt.Errorf("tensor %s has shape %v, want %v", name, tb.Shape, ta.Shape)
		}
	}
	return nil
}

// sameJSON reports whether two JSON documents hold the same value (both
// empty counts as the same).
func sameJSON(x, y json.RawMessage) bool {
	if len(bytes.TrimSpace(x)) == 0 || len(bytes.TrimSpace(y)) == 0 {
		return len(bytes.TrimSpace(x)) == len(bytes.TrimSpace(y))
	}
	var a, b any
	if json.Unmarshal(x, &a) != nil || json.Unmarshal(y, &b) != nil {
		return bytes.Equal(x, y)
	}
	return reflect.DeepEqual(a, b)
}
