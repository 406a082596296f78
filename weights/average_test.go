package weights

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestAverage: the mean of three models, element by element, with the
// first model's configs; the configs may differ in formatting only.
func TestAverage(t *testing.T) {
	a, b, c := tinyModel(), tinyModel(), tinyModel()
	b.UNetConfig = json.RawMessage(" " + unetJSON + "\n") // the same value
	for name, tb := range b.Tensors {
		d := make([]float32, len(tb.Data))
		for i, v := range tb.Data {
			d[i] = 2 * v
		}
		tb.Data = d
		b.Tensors[name] = tb
		c.Tensors[name] = Tensor{Shape: tb.Shape, Data: make([]float32, len(tb.Data))}
	}
	m, err := Average(a, b, c)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.UNetConfig) != unetJSON || string(m.DiffusionConfig) != string(a.DiffusionConfig) || len(m.ClassNames) != 2 {
		t.Errorf("configs %s %s %v: want the first model's", m.UNetConfig, m.DiffusionConfig, m.ClassNames)
	}
	for name, ta := range a.Tensors {
		got := m.Tensors[name]
		for i, v := range ta.Data {
			if want := (v + 2*v + 0) / 3; got.Data[i] != want {
				t.Fatalf("%s[%d] = %v, want %v", name, i, got.Data[i], want)
			}
		}
	}
	if a.Tensors["conv_in.bias"].Data[1] != seq(4)[1] {
		t.Error("Average changed its input")
	}
}

// TestAverageErrors: one model, or models of different architectures,
// are errors that say what differs.
func TestAverageErrors(t *testing.T) {
	diff := tinyModel()
	diff.DiffusionConfig = json.RawMessage(`{"steps": 20}`)
	shape := tinyModel()
	shape.Tensors["conv_in.bias"] = Tensor{Shape: []int{2, 2}, Data: seq(4)}
	missing := tinyModel()
	delete(missing.Tensors, "conv_in.bias")
	missing.Tensors["conv_out.bias"] = Tensor{Shape: []int{4}, Data: seq(4)}
	for _, c := range []struct {
		models []*Model
		want   string
	}{
		{[]*Model{tinyModel()}, "need at least 2"},
		{[]*Model{tinyModel(), diff}, "diffusion config differs"},
		{[]*Model{tinyModel(), shape}, "tensor conv_in.bias has shape [2 2], want [4]"},
		{[]*Model{tinyModel(), missing}, "no tensor"},
	} {
		if _, err := Average(c.models...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error with %q", err, c.want)
		}
	}
}
