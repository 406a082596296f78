package gexec

import (
	"fmt"
	"hash"
	"hash/fnv"

	"github.com/chewxy/hm"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Grad adds to cost's graph the nodes of d cost / d w for every w in wrt
// (reverse-mode automatic differentiation) and returns them in wrt's
// order. Each op's derivative comes from its own SymDiff (Gorgonia's
// SDOp interface), so every op of the graph, and of the derivative graph,
// is one the caller defined and the executor runs through Op[B]: where a
// value feeds several nodes, its gradient contributions are summed by
// this package's AddN op. The seed gradient d cost / d cost is the
// constant 1. Unlike gorgonia.Grad this inserts none of Gorgonia's own
// arithmetic ops (which an executor could only recognise by their private
// type names) and shares no memory between nodes (DESIGN.md fact 2).
//
// Ops whose operands do not lead to any w still have their SymDiff
// called when one of their operands does; the gradient nodes nobody
// needs are simply never compiled (Compile runs only what its outputs
// depend on). A w that cost does not depend on is an error.
func Grad[B any](cost *gorgonia.Node, wrt ...*gorgonia.Node) ([]*gorgonia.Node, error) {
	if cost == nil {
		return nil, fmt.Errorf("gexec: Grad: nil cost")
	}
	order, err := topo([]*gorgonia.Node{cost})
	if err != nil {
		return nil, err
	}
	target := map[int64]bool{}
	for _, w := range wrt {
		target[w.ID()] = true
	}
	// needs[n]: some w is n or lies below n, so n's operands need gradients.
	needs := map[int64]bool{}
	for _, n := range order {
		if target[n.ID()] {
			needs[n.ID()] = true
			continue
		}
		for _, k := range children(n) {
			if needs[k.ID()] {
				needs[n.ID()] = true
				break
			}
		}
	}
	one := gorgonia.NewConstant(float32(1), gorgonia.WithName("dcost/dcost"))
	contrib := map[int64][]*gorgonia.Node{cost.ID(): {one}}
	sum := map[int64]*gorgonia.Node{}
	for i := len(order) - 1; i >= 0; i-- {
		n := order[i]
		parts := contrib[n.ID()]
		if len(parts) == 0 || !needs[n.ID()] {
			continue
		}
		total := parts[0]
		if len(parts) > 1 {
			if total, err = gorgonia.ApplyOp(&AddN[B]{shape: n.Shape().Clone(), n: len(parts)}, parts...); err != nil {
				return nil, fmt.Errorf("gexec: Grad: sum of %d gradients of %s: %w", len(parts), n.Name(), err)
			}
		}
		sum[n.ID()] = total
		if n.Op() == nil || target[n.ID()] && len(children(n)) == 0 {
			continue
		}
		kids := children(n)
		if len(kids) == 0 {
			continue
		}
		sd, ok := n.Op().(gorgonia.SDOp)
		if !ok {
			return nil, fmt.Errorf("gexec: Grad: op %v of node %s has no symbolic derivative (SymDiff)", n.Op(), n.Name())
		}
		grads, err := sd.SymDiff(kids, n, total)
		if err != nil {
			return nil, fmt.Errorf("gexec: Grad: SymDiff of %s: %w", n.Name(), err)
		}
		if len(grads) != len(kids) {
			return nil, fmt.Errorf("gexec: Grad: SymDiff of %s returned %d gradients for %d operands", n.Name(), len(grads), len(kids))
		}
		for j, k := range kids {
			if grads[j] != nil && needs[k.ID()] {
				contrib[k.ID()] = append(contrib[k.ID()], grads[j])
			}
		}
	}
	out := make([]*gorgonia.Node, len(wrt))
	for i, w := range wrt {
		s, ok := sum[w.ID()]
		if !ok {
			return nil, fmt.Errorf("gexec: Grad: the cost does not depend on %s", w.Name())
		}
		out[i] = s
	}
	return out, nil
}

// AddN is y = x_1 + ... + x_n for n operands of one shape: Grad's sum of
// the gradient contributions of a value used more than once.
type AddN[B any] struct {
	shape tensor.Shape
	n     int
}

// Arity is the number of summands.
func (o *AddN[B]) Arity() int { return o.n }

// Type is a -> ... -> a.
func (o *AddN[B]) Type() hm.Type {
	a := hm.TypeVariable('α')
	ts := make([]hm.Type, o.n+1)
	for i := range ts {
		ts[i] = a
	}
	return hm.NewFnType(ts...)
}

// InferShape is the summands' shape.
func (o *AddN[B]) InferShape(...gorgonia.DimSizer) (tensor.Shape, error) { return o.shape.Clone(), nil }

// Do is not supported: AddN runs through Exec.
func (o *AddN[B]) Do(...gorgonia.Value) (gorgonia.Value, error) {
	return nil, fmt.Errorf("gexec: AddN runs through gexec.Program, not Gorgonia's machines")
}

// ReturnsPtr is false.
func (o *AddN[B]) ReturnsPtr() bool { return false }

// CallsExtern is false.
func (o *AddN[B]) CallsExtern() bool { return false }

// OverwritesInput is -1 (none).
func (o *AddN[B]) OverwritesInput() int { return -1 }

// WriteHash writes the op's identity.
func (o *AddN[B]) WriteHash(h hash.Hash) { fmt.Fprintf(h, "gexec.AddN(%d)%v", o.n, o.shape) }

// Hashcode hashes the op's identity.
func (o *AddN[B]) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}

// String names the op.
func (o *AddN[B]) String() string { return fmt.Sprintf("AddN(%d)", o.n) }

// Exec sums the operands into out.
func (o *AddN[B]) Exec(c *Ctx[B], out B, in []B) error {
	size := max(1, o.shape.TotalSize())
	c.Ops.Add(out, in[0], in[1], size)
	for _, x := range in[2:] {
		c.Ops.Add(out, out, x, size)
	}
	return nil
}
