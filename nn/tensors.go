package nn

import "github.com/ddpm-go/ddpm/weights"

// Shapes maps every parameter name to its shape.
func (n *Net[B]) Shapes() map[string][]int {
	s := make(map[string][]int, len(n.set.list))
	for _, p := range n.set.list {
		s[p.Name] = p.Shape
	}
	return s
}

// Split names the values of a flat buffer laid out as the parameters (a
// copy of the parameters, their gradients or optimiser state); the
// tensors are copies.
func (n *Net[B]) Split(flat []float32) map[string]weights.Tensor {
	out := make(map[string]weights.Tensor, len(n.set.list))
	for _, p := range n.set.list {
		out[p.Name] = weights.Tensor{Shape: p.Shape, Data: append([]float32(nil), flat[p.Offset:p.Offset+p.Size]...)}
	}
	return out
}

// Join lays named tensors out as a flat buffer of the parameters' layout;
// the names and shapes must be the network's exactly.
func (n *Net[B]) Join(t map[string]weights.Tensor) ([]float32, error) {
	if err := weights.CheckTensors(t, n.Shapes()); err != nil {
		return nil, err
	}
	flat := make([]float32, n.set.total)
	for _, p := range n.set.list {
		copy(flat[p.Offset:p.Offset+p.Size], t[p.Name].Data)
	}
	return flat, nil
}

// Tensors downloads the parameters under their names.
func (n *Net[B]) Tensors() (map[string]weights.Tensor, error) {
	flat := make([]float32, n.set.total)
	if err := n.ReadParams(flat); err != nil {
		return nil, err
	}
	return n.Split(flat), nil
}

// SetTensors uploads named tensors as the parameters; the names and shapes
// must be the network's exactly.
func (n *Net[B]) SetTensors(t map[string]weights.Tensor) error {
	flat, err := n.Join(t)
	if err != nil {
		return err
	}
	return n.WriteParams(flat)
}
