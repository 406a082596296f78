package gexec

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ddpm-go/ddpm/kernels"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Op is implemented by custom Gorgonia ops that run on backend B: Exec
// queues the op's work, writing the node's value into out from its
// operands' values in (in operand order), through c.Ops. It must not read
// values back to the host. An error means the op cannot run with these
// shapes (a bug, reported by Run).
type Op[B any] interface {
	Exec(c *Ctx[B], out B, in []B) error
}

// Ctx is what an op's Exec gets besides its buffers: the backend and
// scratch and saved buffers.
type Ctx[B any] struct {
	// Ops is the backend.
	Ops  kernels.Ops[B]
	p    *Program[B]
	node int64
	tmp  []sized[B]
}

// sized is a scratch buffer and its length.
type sized[B any] struct {
	b B
	n int
}

// Temp returns a scratch buffer of n values, valid until Exec returns.
func (c *Ctx[B]) Temp(n int) B {
	b := c.p.temp(n)
	c.tmp = append(c.tmp, sized[B]{b, n})
	return b
}

// Saved returns a buffer of n values owned by the node being run that
// lives across Run calls (GroupNorm's statistics, a loss's gradient);
// key names it.
func (c *Ctx[B]) Saved(key string, n int) B { return c.p.saved(c.node, key, n) }

// SavedOf returns the buffer node n saved under key, for a backward op
// reading its forward op's state.
func (c *Ctx[B]) SavedOf(n *gorgonia.Node, key string) (B, bool) { return c.p.Saved(n, key) }

// Options configure Compile.
type Options struct {
	// HostFallback runs nodes that do not implement Op[B] (Gorgonia's own
	// ops) on the host through the op's Do: their inputs are downloaded
	// and the result uploaded, a round trip per node. Off (the default),
	// such nodes make Compile fail with a list of every unsupported op.
	HostFallback bool
}

// Stats describe a compiled Program.
type Stats struct {
	Steps     int // nodes executed per Run
	Host      int // of which run on the host (HostFallback)
	Buffers   int // buffers allocated for node values (inputs and constants included)
	Values    int // node values those buffers hold
	Floats    int // float32 values allocated for node values
	NoReuseFl int // floats a plan without liveness reuse would allocate
}

type step[B any] struct {
	node *gorgonia.Node
	op   Op[B] // nil: host fallback
	out  int   // slot
	in   []int // slots
	n    int
}

type savedKey struct {
	node int64
	key  string
}

// Program is a Gorgonia graph compiled for one backend: the nodes needed
// for the requested outputs, in dependency order, each an Op[B] writing
// into buffers planned by liveness (a value's buffer is reused by later
// values of the same size once its last reader has run). Inputs (the
// graph's leaves), constants and outputs get buffers of their own that
// persist across Run calls. A Program is not safe for concurrent use.
type Program[B any] struct {
	ops     kernels.Ops[B]
	bufs    []B    // by slot
	owned   []bool // by slot: the Program allocated it
	steps   []step[B]
	slotOf  map[int64]int
	inputs  []*gorgonia.Node
	savedB  map[savedKey]B
	temps   map[int][]B
	allBufs []B // every buffer the Program allocated (freed by Close)
	stats   Stats
}

// Compile plans outputs (and every node they depend on) of one graph for
// ops. Gradient nodes from Grad are ordinary nodes: pass them as outputs.
// Graphs must be float32.
func Compile[B any](ops kernels.Ops[B], outputs []*gorgonia.Node, opts Options) (*Program[B], error) {
	if len(outputs) == 0 {
		return nil, fmt.Errorf("gexec: Compile: no outputs")
	}
	order, err := topo(outputs)
	if err != nil {
		return nil, err
	}
	p := &Program[B]{ops: ops, slotOf: map[int64]int{}, savedB: map[savedKey]B{}, temps: map[int][]B{}}
	type slot struct {
		size       int
		persistent bool
		last       int // index of the last step reading it
		hostInit   []float32
	}
	var slots []*slot
	var unsupported []string
	for _, n := range order {
		if n.Dtype() != tensor.Float32 {
			return nil, fmt.Errorf("gexec: node %s has dtype %v: only float32 graphs run here", n.Name(), n.Dtype())
		}
		size := max(1, n.Shape().TotalSize())
		op := n.Op()
		kids := children(n)
		switch c, isConst := op.(interface{ Value() gorgonia.Value }); {
		case op == nil: // a leaf: an input
			slots = append(slots, &slot{size: size, persistent: true, last: -1})
			p.inputs = append(p.inputs, n)
		case isConst && len(kids) == 0:
			v, err := hostData(c.Value())
			if err != nil {
				return nil, fmt.Errorf("gexec: constant %s: %w", n.Name(), err)
			}
			slots = append(slots, &slot{size: size, persistent: true, last: -1, hostInit: v})
		default:
			st := step[B]{node: n, n: size}
			if o, ok := op.(Op[B]); ok {
				st.op = o
			} else if !opts.HostFallback {
				unsupported = append(unsupported, fmt.Sprintf("%s (%T %q)", n.Name(), op, op.String()))
				continue
			}
			slots = append(slots, &slot{size: size, last: -1})
			p.slotOf[n.ID()] = len(slots) - 1
			st.out = len(slots) - 1
			for _, k := range kids {
				st.in = append(st.in, p.slotOf[k.ID()])
			}
			p.steps = append(p.steps, st)
			continue
		}
		p.slotOf[n.ID()] = len(slots) - 1
	}
	if len(unsupported) > 0 {
		sort.Strings(unsupported)
		return nil, fmt.Errorf("gexec: %d node(s) do not implement gexec.Op (or set Options.HostFallback): %s",
			len(unsupported), strings.Join(unsupported, "; "))
	}
	for i, st := range p.steps {
		for _, s := range st.in {
			slots[s].last = i
		}
	}
	for _, o := range outputs {
		slots[p.slotOf[o.ID()]].persistent = true
	}
	// Liveness: give each step's output slot a buffer from the free pool of
	// its size, and return slots after their last reader. A step's output
	// never shares with its own inputs because inputs are released only
	// after the step's output is placed.
	p.bufs = make([]B, len(slots))
	p.owned = make([]bool, len(slots))
	free := map[int][]B{}
	phys := func(size int) B {
		if l := free[size]; len(l) > 0 {
			b := l[len(l)-1]
			free[size] = l[:len(l)-1]
			return b
		}
		b := ops.Alloc(size)
		p.allBufs = append(p.allBufs, b)
		p.stats.Buffers++
		p.stats.Floats += size
		return b
	}
	placed := make([]bool, len(slots))
	for i, s := range slots {
		if s.persistent && !placed[i] {
			p.bufs[i], p.owned[i], placed[i] = phys(s.size), true, true
			if s.hostInit != nil {
				ops.Upload(p.bufs[i], s.hostInit)
			}
		}
	}
	released := make([]bool, len(slots))
	for i, st := range p.steps {
		if !placed[st.out] {
			p.bufs[st.out], p.owned[st.out], placed[st.out] = phys(slots[st.out].size), true, true
		}
		for _, k := range st.in {
			if s := slots[k]; !s.persistent && s.last == i && !released[k] {
				released[k] = true
				free[s.size] = append(free[s.size], p.bufs[k])
			}
		}
		// A value no one reads (an unused intermediate) is released at once.
		if s := slots[st.out]; !s.persistent && s.last < 0 && !released[st.out] {
			released[st.out] = true
			free[s.size] = append(free[s.size], p.bufs[st.out])
		}
		if st.op == nil {
			p.stats.Host++
		}
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
			return nil, fmt.Errorf("gexec: nil output node")
		}
		if err := visit(o); err != nil {
			return nil, err
		}
	}
	return order, nil
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
// node reuses their buffer; outputs, inputs and constants persist.
func (p *Program[B]) Buffer(n *gorgonia.Node) (B, error) {
	s, ok := p.slotOf[n.ID()]
	if !ok {
		var zero B
		return zero, fmt.Errorf("gexec: node %s is not part of this program", n.Name())
	}
	return p.bufs[s], nil
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

// Bind makes node n, an input or an output of this program, use buf, a
// buffer of n's size that the caller owns: parameters shared by several
// programs, or gradients written straight into one flat buffer. The
// Program's own buffer for n is no longer used (it is freed by Close).
func (p *Program[B]) Bind(n *gorgonia.Node, buf B) error {
	s, ok := p.slotOf[n.ID()]
	if !ok {
		return fmt.Errorf("gexec: Bind(%s): not a node of this program", n.Name())
	}
	if !p.owned[s] {
		return fmt.Errorf("gexec: Bind(%s): already bound", n.Name())
	}
	isOutput := false
	for _, st := range p.steps {
		if st.out == s {
			isOutput = true
		}
	}
	if n.Op() != nil && !isOutput {
		return fmt.Errorf("gexec: Bind(%s): only inputs and outputs can be bound", n.Name())
	}
	p.bufs[s], p.owned[s] = buf, false
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

// Saved returns the buffer node n's op saved under key in the last Run
// (see Ctx.Saved).
func (p *Program[B]) Saved(n *gorgonia.Node, key string) (B, bool) {
	b, ok := p.savedB[savedKey{n.ID(), key}]
	return b, ok
}

// Run queues every step on the backend and waits for them; ctx is checked
// between steps. With no host-fallback nodes nothing is copied to or from
// the host.
func (p *Program[B]) Run(ctx context.Context) error {
	if err := p.Queue(ctx); err != nil {
		return err
	}
	if err := p.ops.Sync(); err != nil {
		return fmt.Errorf("gexec: run: %w", err)
	}
	return nil
}

// Queue is Run without the final wait: the work is queued on the backend
// (done, on the CPU) and errors surface at the backend's next Sync. It
// lets a caller queue more work (an optimiser step) before waiting once.
func (p *Program[B]) Queue(ctx context.Context) error {
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
	return nil
}

// OpTime is the time one kind of op took in a profiled run.
type OpTime struct {
	Op    string        // the op's name up to its dimensions, e.g. "Conv2D"
	Count int           // nodes of this kind
	Time  time.Duration // their total wall time, the device waited for after each
}

// Profile runs the program once, waiting for the backend after every node,
// and returns the time per kind of op, largest first. Waiting after every
// node is slower than Run on an asynchronous device; the split is what it
// measures.
func (p *Program[B]) Profile(ctx context.Context) ([]OpTime, error) {
	byOp := map[string]*OpTime{}
	for i := range p.steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st := &p.steps[i]
		start := time.Now()
		if err := p.exec(st); err != nil {
			return nil, fmt.Errorf("gexec: node %s: %w", st.node.Name(), err)
		}
		if err := p.ops.Sync(); err != nil {
			return nil, fmt.Errorf("gexec: node %s: %w", st.node.Name(), err)
		}
		name := opKind(st.node.Op().String())
		t := byOp[name]
		if t == nil {
			t = &OpTime{Op: name}
			byOp[name] = t
		}
		t.Count++
		t.Time += time.Since(start)
	}
	out := make([]OpTime, 0, len(byOp))
	for _, t := range byOp {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time > out[j].Time })
	return out, nil
}

// opKind is an op's name up to its dimensions ("Conv2D{N:1 ...}" -> "Conv2D").
func opKind(name string) string {
	if i := strings.IndexAny(name, "{([#<"); i > 0 {
		return name[:i]
	}
	return name
}

func (p *Program[B]) exec(st *step[B]) error {
	if st.op == nil {
		return p.host(st)
	}
	in := make([]B, len(st.in))
	for j, s := range st.in {
		in[j] = p.bufs[s]
	}
	c := &Ctx[B]{Ops: p.ops, p: p, node: st.node.ID()}
	err := st.op.Exec(c, p.bufs[st.out], in)
	// Back to the pools last-taken first, so that the next run's Temp
	// calls get the same buffers in the same order (a GPU replays a
	// captured graph only for the same kernel arguments).
	for i := len(c.tmp) - 1; i >= 0; i-- {
		t := c.tmp[i]
		p.temps[t.n] = append(p.temps[t.n], t.b)
	}
	return err
}

// host runs a node through its Gorgonia Do on downloaded inputs.
func (p *Program[B]) host(st *step[B]) error {
	kids := children(st.node)
	vals := make([]gorgonia.Value, len(kids))
	for j, k := range kids {
		buf := make([]float32, max(1, k.Shape().TotalSize()))
		p.ops.Download(buf, p.bufs[st.in[j]])
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
	p.ops.Upload(p.bufs[st.out], out)
	return nil
}

// temp returns a pooled scratch buffer of n values.
func (p *Program[B]) temp(n int) B {
	if l := p.temps[n]; len(l) > 0 {
		b := l[len(l)-1]
		p.temps[n] = l[:len(l)-1]
		return b
	}
	b := p.ops.Alloc(n)
	p.allBufs = append(p.allBufs, b)
	return b
}

func (p *Program[B]) saved(node int64, key string, n int) B {
	k := savedKey{node: node, key: key}
	if b, ok := p.savedB[k]; ok {
		return b
	}
	b := p.ops.Alloc(n)
	p.allBufs = append(p.allBufs, b)
	p.savedB[k] = b
	return b
}

// Close frees every buffer the Program allocated (not those given to
// Bind). The Program must not be used afterwards.
func (p *Program[B]) Close() {
	for _, b := range p.allBufs {
		p.ops.Free(b)
	}
	p.allBufs = nil
}
