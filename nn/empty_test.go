package nn

import (
	"context"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/ddpm-go/ddpm/kernels"
)

// TestNewEmpty: the same parameters as New, all zero, and usable once
// written.
func TestNewEmpty(t *testing.T) {
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	build := func(b *Builder[[]float32], k Key) (*G.Node, error) {
		x := b.Input("x", k.N, 3)
		return b.Linear("lin", b.SiLU(b.Linear("emb", x, 5)), 2), b.Err()
	}
	full, err := New[[]float32](cpu, build, Key{N: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	empty, err := NewEmpty[[]float32](cpu, build, Key{N: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(full.Params(), empty.Params(), func(a, b Param) bool {
		return a.Name == b.Name && slices.Equal(a.Shape, b.Shape) && a.Offset == b.Offset
	}) {
		t.Fatalf("params differ: %+v vs %+v", full.Params(), empty.Params())
	}
	p := make([]float32, empty.NumParams())
	if err := empty.ReadParams(p); err != nil {
		t.Fatal(err)
	}
	for i, v := range p {
		if v != 0 {
			t.Fatalf("param %d = %v, want 0", i, v)
		}
	}
	if err := full.ReadParams(p); err != nil {
		t.Fatal(err)
	}
	if err := empty.WriteParams(p); err != nil {
		t.Fatal(err)
	}
	in := map[string][]float32{"x": {1, -2, 3}}
	a, b := make([]float32, 2), make([]float32, 2)
	if err := full.Forward(context.Background(), Key{N: 1}, in, a); err != nil {
		t.Fatal(err)
	}
	if err := empty.Forward(context.Background(), Key{N: 1}, in, b); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a, b) {
		t.Fatalf("outputs %v and %v", a, b)
	}
}
