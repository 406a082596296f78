package nn

import (
	"fmt"
	"hash"
	"hash/fnv"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// base is what every op has: a name that carries its dimensions (its
// identity for Gorgonia's hash-consing: two nodes with the same op name
// and operands are the same value), the output shape and the arity. The
// ops run only through gexec (Exec); Do is an error.
type base struct {
	name  string
	out   tensor.Shape
	arity int
}

func newBase(name string, out tensor.Shape, arity int) base {
	return base{name: name, out: out.Clone(), arity: arity}
}

func (o *base) Arity() int { return o.arity }

func (o *base) Type() hm.Type {
	ts := make([]hm.Type, 0, o.arity+1)
	for i := 0; i < o.arity; i++ {
		ts = append(ts, hm.TypeVariable(rune('α'+i))) // not 'b': Gorgonia's inference uses it for the result
	}
	if len(o.out) == 0 {
		ts = append(ts, tensor.Float32)
	} else {
		ts = append(ts, G.TensorType{Dims: len(o.out), Of: tensor.Float32})
	}
	return hm.NewFnType(ts...)
}

func (o *base) InferShape(...G.DimSizer) (tensor.Shape, error) { return o.out.Clone(), nil }
func (o *base) ReturnsPtr() bool                               { return false }
func (o *base) CallsExtern() bool                              { return false }
func (o *base) OverwritesInput() int                           { return -1 }
func (o *base) WriteHash(h hash.Hash)                          { fmt.Fprintf(h, "%s%v", o.name, o.out) }
func (o *base) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}
func (o *base) String() string { return o.name }

// Do is not supported: the ops run through package gexec on a backend.
func (o *base) Do(...G.Value) (G.Value, error) {
	return nil, fmt.Errorf("nn: %s runs through gexec, not Gorgonia's machines", o.name)
}

// size is the number of values of the op's output.
func (o *base) size() int { return max(1, o.out.TotalSize()) }

// apply adds a node for op over the inputs.
func apply(op G.Op, in ...*G.Node) (*G.Node, error) { return G.ApplyOp(op, in...) }

// all returns a DiffWRT mask of n trues.
func all(n int) []bool {
	m := make([]bool, n)
	for i := range m {
		m[i] = true
	}
	return m
}
