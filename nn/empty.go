package nn

import (
	"fmt"

	"github.com/ddpm-go/ddpm/kernels"
)

// NewEmpty is New without the random initialisation: the parameters are
// allocated zeroed on ops, to be filled with WriteParams (weights read
// from a file). Drawing and uploading initial values for hundreds of
// millions of parameters only to overwrite them takes minutes; this takes
// the time of building the graph.
func NewEmpty[B any](ops kernels.Ops[B], build BuildFunc[B], probe Key) (*Net[B], error) {
	n := &Net[B]{ops: ops, build: build, progs: map[progKey]*program[B]{},
		set: &paramSet{byName: map[string]int{}, open: true}}
	b := n.builder(false, false)
	if _, err := build(b, probe); err != nil {
		return nil, err
	}
	if err := b.Err(); err != nil {
		return nil, err
	}
	if n.set.total == 0 {
		return nil, fmt.Errorf("nn: the network declares no parameters")
	}
	n.set.open = false
	n.params = ops.Alloc(n.set.total)
	if err := ops.Sync(); err != nil {
		return nil, fmt.Errorf("nn: allocate %d parameters on %s: %w", n.set.total, ops.Name(), err)
	}
	return n, nil
}
