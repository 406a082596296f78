package gexec

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/ddpm-go/ddpm/kernels"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Options configure Compile.
type Options struct {
	// HostFallback runs nodes the executor cannot lower (Gorgonia ops other
	// than + - ⊙ neg Reshape and constants, and custom ops not implementing
	// Op) on the host through the op's Do: their inputs are downloaded and
	// the result uploaded, a round trip per node. Off (the default), such
	// nodes make Compile fail with a list of every unsupported op.
	HostFallback bool
}

// Stats describe a compiled Program.
type Stats struct {
	Steps     int // nodes executed per Run
	Host      int // of which run on the host (HostFallback)
	Buffers   int // buffers allocated for node values (inputs and constants included)
	Values    int // node values those buffers hold (Steps + inputs + constants, minus views)
	Floats    int // float32 values allocated for node values
	NoReuseFl int // floats a plan without liveness reuse would allocate
}

type stepKind uint8

const (
	kCustom stepKind = iota
	kAdd
	kSub
	kMul
	kNeg
	kScale // y = c * x, c a scalar constant operand
	kHost
)

type step struct {
	node  *gorgonia.Node
	kind  stepKind
	op    Op
	out   Buf
	in    []Buf
	n     int
	c     float32
	kids  []*gorgonia.Node // children (host fallback shapes)
	frees []int            // storage slots free after this step (planning)
}

type savedKey struct {
	node int64
	key  string
}

// Program is a Gorgonia graph compiled for one backend: the nodes needed
// for the requested outputs, in dependency order, each mapped to Ops calls
// on buffers planned by liveness (a value's buffer is reused by later
// values of the same size once its last reader has run). Inputs (the
// graph's leaves) and outputs get buffers of their own that persist across
// Run calls. A Program is not safe for concurrent use.
type Program[B any] struct {
	ops     kernels.Ops[B]
	h       handles[B]
	steps   []step
	nodeBuf map[int64]Buf
	inputs  []*gorgonia.Node
	outputs []*gorgonia.Node
	owned   map[Buf]bool // handles whose buffers the Program frees
	savedB  map[savedKey]Buf
	tempMap map[int][]Buf // free scratch buffers by size
	tempSz  map[Buf]int
	stats   Stats
}

// Compile plans outputs (and every node they depend on) of one graph for
// ops. Gradient nodes from gorgonia.Grad are ordinary nodes: pass them as
// outputs. Graphs must be float32.
func Compile[B any](ops kernels.Ops[B], outputs []*gorgonia.Node, opts Options) (*Program[B], error) {
	if len(outputs) == 0 {
		return nil, fmt.Errorf("gexec: Compile: no outputs")
	}
	order, err := topo(outputs)
	if err != nil {
		return nil, err
	}
	p := &Program[B]{ops: ops, nodeBuf: map[int64]Buf{}, owned: map[Buf]bool{}, savedB: map[savedKey]Buf{},
		tempMap: map[int][]Buf{}, tempSz: map[Buf]int{}, outputs: outputs}
	p.h.ops = ops
	p.h.bufs = make([]B, 1)
	p.h.lens = make([]int, 1)

	isOut := map[int64]bool{}
	for _, o := range outputs {
		isOut[o.ID()] = true
	}
	// Storage slots: views (Reshape) share their child's slot.
	type slot struct {
		size       int
		persistent bool
		last       int // index of the last step reading it
		buf        Buf
		hostInit   []float32
	}
	var slots []*slot
	slotOf := map[int64]int{}
	var unsupported []string
	type pending struct {
		st   step
		node *gorgonia.Node
		kids []*gorgonia.Node
	}
	var plan []pending
	for _, n := range order {
		if n.Dtype() != tensor.Float32 {
			return nil, fmt.Errorf("gexec: node %s has dtype %v: only float32 graphs run here", n.Name(), n.Dtype())
		}
		size := max(1, n.Shape().TotalSize())
		op := n.Op()
		if op == nil { // leaf: an input
			slots = append(slots, &slot{size: size, persistent: true, last: -1})
			slotOf[n.ID()] = len(slots) - 1
			p.inputs = append(p.inputs, n)
			continue
		}
		if c, ok := op.(interface{ Value() gorgonia.Value }); ok && op.Arity() <= 1 && len(children(n)) == 0 {
			v, err := hostData(c.Value())
			if err != nil {
				return nil, fmt.Errorf("gexec: constant %s: %w", n.Name(), err)
			}
			slots = append(slots, &slot{size: size, persistent: true, last: -1, hostInit: v})
			slotOf[n.ID()] = len(slots) - 1
			continue
		}
		kids := children(n)
		if strings.HasPrefix(fmt.Sprintf("%T", op), "gorgonia.reshapeOp") && len(kids) == 1 {
			slotOf[n.ID()] = slotOf[kids[0].ID()]
			continue
		}
		st := step{node: n, n: size, kids: kids}
		if err := classify(&st, n, op, kids, opts.HostFallback); err != nil {
			unsupported = append(unsupported, err.Error())
			continue
		}
		plan = append(plan, pending{st: st, node: n, kids: kids})
		slots = append(slots, &slot{size: size, last: -1})
		slotOf[n.ID()] = len(slots) - 1
	}
	if len(unsupported) > 0 {
		sort.Strings(unsupported)
		return nil, fmt.Errorf("gexec: %d node(s) have no lowering (implement gexec.Op, or set Options.HostFallback): %s",
			len(unsupported), strings.Join(unsupported, "; "))
	}
	for i, pd := range plan {
		for _, k := range pd.kids {
			slots[slotOf[k.ID()]].last = i
		}
	}
	for id := range isOut {
		slots[slotOf[id]].persistent = true
	}
	// Liveness: walk the steps, giving each output slot a physical buffer
	// from the free pool of its size, and returning slots after their last
	// reader. A step's output never shares with its own inputs because
	// inputs are released only after the step's output is placed.
	free := map[int][]Buf{}
	phys := func(size int) Buf {
		if l := free[size]; len(l) > 0 {
			b := l[len(l)-1]
			free[size] = l[:len(l)-1]
			return b
		}
		b := p.h.add(ops.Alloc(size), size)
		p.owned[b] = true
		p.stats.Buffers++
		p.stats.Floats += size
		return b
	}
	for _, s := range slots {
		if s.persistent && s.buf == 0 {
			s.buf = phys(s.size)
			if s.hostInit != nil {
				ops.Upload(p.h.b(s.buf), s.hostInit)
			}
		}
	}
	released := map[int]bool{}
	for i := range plan {
		st := plan[i].st
		si := slotOf[st.node.ID()]
		s := slots[si]
		if s.buf == 0 {
			s.buf = phys(s.size)
		}
		st.out = s.buf
		st.in = make([]Buf, len(st.kids))
		for j, k := range st.kids {
			st.in[j] = slots[slotOf[k.ID()]].buf
		}
		for _, k := range st.kids {
			ki := slotOf[k.ID()]
			ks := slots[ki]
			if !ks.persistent && ks.last == i && !released[ki] {
				released[ki] = true
				free[ks.size] = append(free[ks.size], ks.buf)
			}
		}
		// A value no one reads (an unused intermediate) is released at once.
		if !s.persistent && s.last < 0 && !released[si] {
			released[si] = true
			free[s.size] = append(free[s.size], s.buf)
		}
		p.steps = append(p.steps, st)
		if st.kind == kHost {
			p.stats.Host++
		}
	}
	for id, si := range slotOf {
		p.nodeBuf[id] = slots[si].buf
	}
	p.stats.Steps = len(p.steps)
	p.stats.Values = len(slots)
	for _, s := range slots {
		p.stats.NoReuseFl += s.size
	}
	if err := ops.Sync(); err != nil {
		p.Close()
		return nil, fmt.Errorf("gexec: allocate buffers: %w", err)
	}
	return p, nil
}

// children returns n's operands in order.
func children(n *gorgonia.Node) []*gorgonia.Node {
	it := n.Graph().From(n.ID())
	var out []*gorgonia.Node
	for it.Next() {
		out = append(out, it.Node().(*gorgonia.Node))
	}
	return out
}

// topo returns the nodes outputs depend on, children before parents.
func topo(outputs []*gorgonia.Node) ([]*gorgonia.Node, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[int64]int{}
	var order []*gorgonia.Node
	var visit func(n *gorgonia.Node) error
	visit = func(n *gorgonia.Node) error {
		switch state[n.ID()] {
		case visiting:
			return fmt.Errorf("gexec: cycle through node %s", n.Name())
		case done:
			return nil
		}
		state[n.ID()] = visiting
		for _, k := range children(n) {
			if err := visit(k); err != nil {
				return err
			}
		}
		state[n.ID()] = done
		order = append(order, n)
		return nil
	}
	for _, o := range outputs {
		if o == nil {
			return nil, fmt.Errorf("gexec: Compile: nil output node")
		}
		if err := visit(o); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// classify picks the step kind for n.
func classify(st *step, n *gorgonia.Node, op gorgonia.Op, kids []*gorgonia.Node, host bool) error {
	if o, ok := op.(Op); ok {
		st.kind, st.op = kCustom, o
		return nil
	}
	typ := fmt.Sprintf("%T", op)
	sym := ""
	if f := strings.Fields(op.String()); len(f) > 0 {
		sym = f[0]
	}
	size := st.n
	sameSize := func() bool {
		for _, k := range kids {
			if max(1, k.Shape().TotalSize()) != size {
				return false
			}
		}
		return true
	}
	switch {
	case typ == "gorgonia.elemBinOp" && len(kids) == 2 && sameSize() && !n.IsScalar():
		switch sym {
		case "+":
			st.kind = kAdd
			return nil
		case "-":
			st.kind = kSub
			return nil
		case "⊙":
			st.kind = kMul
			return nil
		}
	case typ == "gorgonia.elemBinOp" && len(kids) == 2 && sym == "⊙":
		// tensor ⊙ scalar constant (or the reverse): y = c * x.
		for j, k := range kids {
			other := kids[1-j]
			if c, ok := k.Op().(interface{ Value() gorgonia.Value }); ok && k.IsScalar() && max(1, other.Shape().TotalSize()) == size {
				if v, err := hostData(c.Value()); err == nil && len(v) == 1 {
					st.kind, st.c = kScale, v[0]
					st.kids = []*gorgonia.Node{other}
					return nil
				}
			}
		}
	case typ == "gorgonia.elemUnaryOp" && sym == "neg" && len(kids) == 1 && sameSize():
		st.kind = kNeg
		return nil
	}
	if host {
		st.kind = kHost
		return nil
	}
	return fmt.Errorf("%s (%s %q)", n.Name(), typ, op.String())
}

// hostData flattens a float32 Gorgonia value.
func hostData(v gorgonia.Value) ([]float32, error) {
	switch x := v.(type) {
	case *gorgonia.F32:
		return []float32{float32(*x)}, nil
	case tensor.Tensor:
		if x.Dtype() != tensor.Float32 {
			return nil, fmt.Errorf("dtype %v: only float32", x.Dtype())
		}
		if d, ok := x.(*tensor.Dense); ok && d.IsMaterializable() {
			x = d.Materialize()
		}
		data, ok := x.Data().([]float32)
		if !ok {
			if f, ok := x.Data().(float32); ok {
				return []float32{f}, nil
			}
			return nil, fmt.Errorf("value of type %T holds %T", x, x.Data())
		}
		return append([]float32(nil), data...), nil
	}
	return nil, fmt.Errorf("value of type %T: only float32 scalars and tensors", v)
}

// Inputs lists the graph's leaves the outputs depend on (parameters and
// data), which the caller fills with SetInput or Bind before Run.
func (p *Program[B]) Inputs() []*gorgonia.Node { return p.inputs }

// Stats describes the plan.
func (p *Program[B]) Stats() Stats { return p.stats }

// Buffer returns the backend buffer holding node n's value (for inputs,
// the buffer to fill). Intermediate values are only valid until a later
// node reuses their buffer; outputs and inputs persist.
func (p *Program[B]) Buffer(n *gorgonia.Node) (B, error) {
	b, ok := p.nodeBuf[n.ID()]
	if !ok {
		var zero B
		return zero, fmt.Errorf("gexec: node %s is not part of this program", n.Name())
	}
	return p.h.b(b), nil
}

// SetInput uploads host values into input n.
func (p *Program[B]) SetInput(n *gorgonia.Node, v []float32) error {
	b, err := p.Buffer(n)
	if err != nil {
		return err
	}
	if want := max(1, n.Shape().TotalSize()); len(v) != want {
		return fmt.Errorf("gexec: SetInput(%s): %d values, the node has shape %v (%d values)", n.Name(), len(v), n.Shape(), want)
	}
	p.ops.Upload(b, v)
	return nil
}

// Bind makes input n read from buf, a buffer the caller owns (for example
// parameters shared by a sampling and a training Program); the Program's
// own buffer for n is freed.
func (p *Program[B]) Bind(n *gorgonia.Node, buf B) error {
	h, ok := p.nodeBuf[n.ID()]
	if !ok || n.Op() != nil {
		return fmt.Errorf("gexec: Bind(%s): not an input of this program", n.Name())
	}
	if p.owned[h] {
		p.ops.Free(p.h.bufs[h])
		delete(p.owned, h)
	}
	p.h.bufs[h] = buf
	return nil
}

// Read downloads node n's value (waiting for queued work).
func (p *Program[B]) Read(n *gorgonia.Node, dst []float32) error {
	b, err := p.Buffer(n)
	if err != nil {
		return err
	}
	if want := max(1, n.Shape().TotalSize()); len(dst) != want {
		return fmt.Errorf("gexec: Read(%s): dst has %d values, the node has %d", n.Name(), len(dst), want)
	}
	p.ops.Download(dst, b)
	return p.ops.Sync()
}

// Run queues every step on the backend and waits for them; ctx is checked
// between steps. With no host-fallback nodes nothing is copied to or from
// the host.
func (p *Program[B]) Run(ctx context.Context) error {
	for i := range p.steps {
		if i%32 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := p.exec(&p.steps[i]); err != nil {
			return fmt.Errorf("gexec: node %s: %w", p.steps[i].node.Name(), err)
		}
	}
	if err := p.ops.Sync(); err != nil {
		return fmt.Errorf("gexec: run: %w", err)
	}
	return nil
}

func (p *Program[B]) exec(st *step) error {
	h := &p.h
	switch st.kind {
	case kAdd:
		p.ops.Add(h.b(st.out), h.b(st.in[0]), h.b(st.in[1]), st.n)
	case kSub:
		p.ops.Copy(h.b(st.out), h.b(st.in[0]), st.n)
		p.ops.Axpby(h.b(st.out), -1, h.b(st.in[1]), 1, st.n)
	case kMul:
		p.ops.Mul(h.b(st.out), h.b(st.in[0]), h.b(st.in[1]), st.n)
	case kNeg:
		p.ops.Axpby(h.b(st.out), -1, h.b(st.in[0]), 0, st.n)
	case kScale:
		p.ops.Axpby(h.b(st.out), st.c, h.b(st.in[0]), 0, st.n)
	case kHost:
		return p.host(st)
	case kCustom:
		k := &kernelsFor[B]{p: p, node: st.node.ID()}
		err := st.op.Exec(k, st.out, st.in)
		for _, t := range k.temps {
			p.releaseTemp(t)
		}
		p.h.tmp, p.h.tlen = p.h.tmp[:0], p.h.tlen[:0]
		return err
	}
	return nil
}

// host runs a node through its Gorgonia Do on downloaded inputs.
func (p *Program[B]) host(st *step) error {
	vals := make([]gorgonia.Value, len(st.kids))
	for j, k := range st.kids {
		n := max(1, k.Shape().TotalSize())
		buf := make([]float32, n)
		p.ops.Download(buf, p.h.b(st.in[j]))
		if k.IsScalar() {
			vals[j] = gorgonia.NewF32(buf[0])
		} else {
			vals[j] = tensor.New(tensor.WithShape(k.Shape()...), tensor.WithBacking(buf))
		}
	}
	if err := p.ops.Sync(); err != nil {
		return err
	}
	v, err := st.node.Op().Do(vals...)
	if err != nil {
		return fmt.Errorf("host %s: %w", st.node.Op(), err)
	}
	out, err := hostData(v)
	if err != nil {
		return err
	}
	if len(out) != st.n {
		return fmt.Errorf("host %s: %d values, want %d", st.node.Op(), len(out), st.n)
	}
	p.ops.Upload(p.h.b(st.out), out)
	return nil
}

// temp returns a pooled scratch buffer of n values.
func (p *Program[B]) temp(n int) Buf {
	if l := p.tempMap[n]; len(l) > 0 {
		b := l[len(l)-1]
		p.tempMap[n] = l[:len(l)-1]
		return b
	}
	b := p.h.add(p.ops.Alloc(n), n)
	p.owned[b] = true
	p.tempSz[b] = n
	return b
}

func (p *Program[B]) releaseTemp(b Buf) {
	n := p.tempSz[b]
	p.tempMap[n] = append(p.tempMap[n], b)
}

func (p *Program[B]) saved(node int64, key string, n int) Buf {
	k := savedKey{node: node, key: key}
	if b, ok := p.savedB[k]; ok {
		return b
	}
	b := p.h.add(p.ops.Alloc(n), n)
	p.owned[b] = true
	p.savedB[k] = b
	return b
}

func (p *Program[B]) savedOf(node int64, key string) Buf {
	return p.savedB[savedKey{node: node, key: key}]
}

// Close frees every buffer the Program allocated (not those given to Bind).
func (p *Program[B]) Close() {
	for b := range p.owned {
		p.ops.Free(p.h.bufs[b])
	}
	p.owned = map[Buf]bool{}
}
