package cuda

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ddpm-go/ddpm/kernels"
)

// CUDA graphs for repeated work. A sampling loop runs the same forward
// pass (the same kernels on the same buffers, only the uploaded inputs
// change) once per step; queued op by op, each of its hundreds of kernels
// costs a driver call, a mutex and a context switch on the host, which at
// small batches is most of the step. GraphOps records the ops queued
// between two synchronising calls, and when the same sequence comes again
// it captures it once into a CUDA graph (stream capture,
// cuGraphInstantiate) and from then on launches the whole sequence with
// one cuGraphLaunch.

// GraphStats counts what GraphOps did with the sequences of queued ops
// it saw (each ends at a synchronising call: Sync, Download, Upload,
// Alloc, Free, SumSquares, Embedding, or an op GraphOps does not defer).
type GraphStats struct {
	Eager    int // sequences queued op by op (first sightings, or not capturable)
	Captured int // sequences captured into a graph (and launched)
	Replayed int // graph launches of a sequence seen before
	Failed   int // captures that failed (the sequence then ran op by op)
	Graphs   int // graphs held now
}

// maxGraphs bounds the graphs a Device keeps (each holds its kernels'
// arguments); the least recently launched goes first.
const maxGraphs = 16

// graphExec is one instantiated graph.
type graphExec struct {
	exec, graph uintptr
	ops         int    // the sequence's length
	gen         uint64 // Device.scratchGen at capture
	lastUse     uint64
}

// GraphOps is kernels.Ops[Ptr] on a Device with CUDA-graph replay of
// repeated work (see GraphStats). The ops that only queue device work
// (elementwise, convolutions, GEMMs, GroupNorm, attention, the optimiser
// ops) are deferred: recorded with a hash of their arguments until the
// next synchronising call, which issues the recorded sequence:
//
//   - the first time a sequence (by hash and length) is seen, op by op;
//   - the second time, under stream capture into a graph, which is then
//     instantiated and launched (a capture that fails, for example because
//     a scratch buffer had to grow, runs op by op instead);
//   - afterwards, as one cuGraphLaunch of that graph, as long as no
//     scratch buffer the graph refers to has been reallocated since.
//
// Results are bit-identical to the Device's own. Every other method is
// the Device's, called after the recorded sequence is issued, so the
// order of work never changes; argument errors surface at the next Sync
// as usual. A GraphOps must be the Device's only user, from one
// goroutine at a time (nn.Net serialises its calls).
type GraphOps struct {
	*Device

	mu      sync.Mutex
	pend    []func()
	sig     uint64 // FNV-1a over the recorded ops and their arguments
	seen    map[graphKey]int
	fail    map[graphKey]int
	issuing bool
	stats   GraphStats
}

type graphKey struct {
	sig uint64
	n   int
}

// NewGraphOps wraps d. The Device must not be used directly afterwards
// (its own methods still work through the GraphOps, in order).
func NewGraphOps(d *Device) *GraphOps {
	g := &GraphOps{Device: d, seen: map[graphKey]int{}, fail: map[graphKey]int{}}
	d.mu.Lock()
	d.hook = g.flushHook
	d.mu.Unlock()
	return g
}

var _ kernels.Ops[Ptr] = (*GraphOps)(nil)

// Name is the Device's name with ", graphs".
func (g *GraphOps) Name() string { return g.Device.Name() + ", graphs" }

// Stats returns the counters.
func (g *GraphOps) Stats() GraphStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.stats
	g.Device.mu.Lock()
	s.Graphs = len(g.Device.graphs)
	g.Device.mu.Unlock()
	return s
}

// Sync issues the recorded work and waits for it.
func (g *GraphOps) Sync() error {
	g.flush()
	return g.Device.Sync()
}

// flushHook is the Device's hook: every Device call first issues the
// recorded sequence (except the calls flush itself makes).
func (g *GraphOps) flushHook() {
	if !g.issuing {
		g.flush()
	}
}

// record defers f, hashing op and its arguments into the signature.
func (g *GraphOps) record(op string, f func(), args ...uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	const prime = 1099511628211
	h := g.sig
	if len(g.pend) == 0 {
		h = 14695981039346656037
	}
	for i := 0; i < len(op); i++ {
		h = (h ^ uint64(op[i])) * prime
	}
	for _, a := range args {
		for k := 0; k < 64; k += 8 {
			h = (h ^ (a >> k & 0xff)) * prime
		}
	}
	g.sig = h
	g.pend = append(g.pend, f)
}

// flush issues the recorded sequence as the type doc says.
func (g *GraphOps) flush() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pend) == 0 {
		return
	}
	ops := g.pend
	key := graphKey{g.sig, len(ops)}
	g.pend = nil
	g.issuing = true
	defer func() { g.issuing = false }()
	// One OS thread for the whole capture (LockOSThread nests with the
	// ops' own), so the capture's thread-local mode covers every call.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	d := g.Device
	if d.launchGraph(key) {
		g.stats.Replayed++
		return
	}
	g.seen[key]++
	if g.seen[key] >= 2 && g.fail[key] < 2 && d.canCapture() {
		if err := d.capture(key, ops); err == nil {
			g.stats.Captured++
			return
		}
		g.fail[key]++
		g.stats.Failed++
	} else {
		g.stats.Eager++
	}
	for _, f := range ops {
		f()
	}
	if len(g.seen) > 4096 { // sequences that never repeat
		clear(g.seen)
	}
}

// canCapture reports whether the driver has the graph entry points.
func (d *Device) canCapture() bool {
	drv := d.drv
	return drv.cuStreamBeginCapture != 0 && drv.cuStreamEndCapture != 0 && drv.cuGraphInstantiateWithFlags != 0 &&
		drv.cuGraphLaunch != 0 && drv.cuGraphExecDestroy != 0 && drv.cuGraphDestroy != 0
}

// launchGraph launches the graph of key if there is a valid one.
func (d *Device) launchGraph(key graphKey) bool {
	if !d.enterNoHook() {
		d.leave()
		return false
	}
	defer d.leave()
	ge := d.graphs[key]
	if ge == nil {
		return false
	}
	if ge.gen != d.scratchGen || ge.ops != key.n {
		d.dropGraph(key)
		return false
	}
	d.graphUses++
	ge.lastUse = d.graphUses
	if r := d.drv.call(d.drv.cuGraphLaunch, ge.exec, d.stream); r != 0 {
		d.failLocked(check("cuGraphLaunch", r))
	}
	return true
}

// capture runs ops under stream capture, instantiates the graph, keeps it
// under key and launches it. On failure nothing ran and the error the
// capture left is cleared; the caller runs the ops itself.
func (d *Device) capture(key graphKey, ops []func()) error {
	const threadLocal = 1 // CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
	if !d.enterNoHook() {
		d.leave()
		return fmt.Errorf("cuda: capture after an error")
	}
	if r := d.drv.call(d.drv.cuStreamBeginCapture, d.stream, threadLocal); r != 0 {
		d.leave()
		return check("cuStreamBeginCapture", r)
	}
	gen := d.scratchGen
	d.leave()
	for _, f := range ops {
		f()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.drv.call(d.drv.cuCtxSetCurrent, d.ctx)
	var pn runtime.Pinner
	defer pn.Unpin()
	graph := hp[uintptr](&pn)
	r := d.drv.call(d.drv.cuStreamEndCapture, d.stream, uintptr(unsafe.Pointer(graph)))
	err := d.err
	d.err = nil // whatever failed inside the capture runs again op by op
	if r != 0 || err != nil || d.scratchGen != gen {
		if *graph != 0 {
			d.drv.call(d.drv.cuGraphDestroy, *graph)
		}
		if r != 0 {
			return check("cuStreamEndCapture", r)
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("cuda: a scratch buffer grew during the capture")
	}
	exec := hp[uintptr](&pn)
	if r := d.drv.call(d.drv.cuGraphInstantiateWithFlags, uintptr(unsafe.Pointer(exec)), *graph, 0); r != 0 {
		d.drv.call(d.drv.cuGraphDestroy, *graph)
		return check("cuGraphInstantiateWithFlags", r)
	}
	if r := d.drv.call(d.drv.cuGraphLaunch, *exec, d.stream); r != 0 {
		d.drv.call(d.drv.cuGraphExecDestroy, *exec)
		d.drv.call(d.drv.cuGraphDestroy, *graph)
		return check("cuGraphLaunch", r)
	}
	if d.graphs == nil {
		d.graphs = map[graphKey]*graphExec{}
	}
	for len(d.graphs) >= maxGraphs {
		var old graphKey
		first := true
		for k, v := range d.graphs {
			if first || v.lastUse < d.graphs[old].lastUse {
				old, first = k, false
			}
		}
		d.dropGraph(old)
	}
	d.graphUses++
	d.graphs[key] = &graphExec{exec: *exec, graph: *graph, ops: key.n, gen: gen, lastUse: d.graphUses}
	return nil
}

// dropGraph destroys a kept graph (mutex held, context current).
func (d *Device) dropGraph(key graphKey) {
	if ge := d.graphs[key]; ge != nil {
		d.drv.call(d.drv.cuGraphExecDestroy, ge.exec)
		d.drv.call(d.drv.cuGraphDestroy, ge.graph)
		delete(d.graphs, key)
	}
}

// The deferred ops: each records its call with its arguments.

func fb(v float32) uint64 { return uint64(math.Float32bits(v)) }

func dims(c kernels.ConvDims) []uint64 {
	return []uint64{uint64(c.N), uint64(c.C), uint64(c.H), uint64(c.W), uint64(c.K), uint64(c.R), uint64(c.S),
		uint64(c.StrideH), uint64(c.StrideW), uint64(c.PadTop), uint64(c.PadLeft), uint64(c.PadBottom), uint64(c.PadRight)}
}

func (g *GraphOps) Fill(y Ptr, v float32, n int) {
	g.record("Fill", func() { g.Device.Fill(y, v, n) }, uint64(y), fb(v), uint64(n))
}
func (g *GraphOps) Copy(dst, src Ptr, n int) {
	g.record("Copy", func() { g.Device.Copy(dst, src, n) }, uint64(dst), uint64(src), uint64(n))
}
func (g *GraphOps) SiLU(y, x Ptr, n int) {
	g.record("SiLU", func() { g.Device.SiLU(y, x, n) }, uint64(y), uint64(x), uint64(n))
}
func (g *GraphOps) SiLUBackward(dx, dy, x Ptr, n int) {
	g.record("SiLUBackward", func() { g.Device.SiLUBackward(dx, dy, x, n) }, uint64(dx), uint64(dy), uint64(x), uint64(n))
}

// GELU is Device.GELU, deferred.
func (g *GraphOps) GELU(y, x Ptr, n int) {
	g.record("GELU", func() { g.Device.GELU(y, x, n) }, uint64(y), uint64(x), uint64(n))
}

// GELUBackward is Device.GELUBackward, deferred.
func (g *GraphOps) GELUBackward(dx, dy, x Ptr, n int) {
	g.record("GELUBackward", func() { g.Device.GELUBackward(dx, dy, x, n) }, uint64(dx), uint64(dy), uint64(x), uint64(n))
}

func (g *GraphOps) Add(y, a, b Ptr, n int) {
	g.record("Add", func() { g.Device.Add(y, a, b, n) }, uint64(y), uint64(a), uint64(b), uint64(n))
}
func (g *GraphOps) Axpby(y Ptr, alpha float32, x Ptr, beta float32, n int) {
	g.record("Axpby", func() { g.Device.Axpby(y, alpha, x, beta, n) }, uint64(y), fb(alpha), uint64(x), fb(beta), uint64(n))
}
func (g *GraphOps) Mul(y, a, b Ptr, n int) {
	g.record("Mul", func() { g.Device.Mul(y, a, b, n) }, uint64(y), uint64(a), uint64(b), uint64(n))
}
func (g *GraphOps) Clamp(y, x Ptr, lo, hi float32, n int) {
	g.record("Clamp", func() { g.Device.Clamp(y, x, lo, hi, n) }, uint64(y), uint64(x), fb(lo), fb(hi), uint64(n))
}
func (g *GraphOps) AddChannelBias(y, x, bias Ptr, n, c, hw int) {
	g.record("AddChannelBias", func() { g.Device.AddChannelBias(y, x, bias, n, c, hw) },
		uint64(y), uint64(x), uint64(bias), uint64(n), uint64(c), uint64(hw))
}
func (g *GraphOps) ChannelSum(dbias, dy Ptr, n, c, hw int) {
	g.record("ChannelSum", func() { g.Device.ChannelSum(dbias, dy, n, c, hw) }, uint64(dbias), uint64(dy), uint64(n), uint64(c), uint64(hw))
}
func (g *GraphOps) Upsample2x(y, x Ptr, n, c, h, w int) {
	g.record("Upsample2x", func() { g.Device.Upsample2x(y, x, n, c, h, w) }, uint64(y), uint64(x), uint64(n), uint64(c), uint64(h), uint64(w))
}
func (g *GraphOps) Upsample2xBackward(dx, dy Ptr, n, c, h, w int) {
	g.record("Upsample2xBackward", func() { g.Device.Upsample2xBackward(dx, dy, n, c, h, w) },
		uint64(dx), uint64(dy), uint64(n), uint64(c), uint64(h), uint64(w))
}
func (g *GraphOps) ConcatChannels(y, a, b Ptr, n, ca, cb, hw int) {
	g.record("ConcatChannels", func() { g.Device.ConcatChannels(y, a, b, n, ca, cb, hw) },
		uint64(y), uint64(a), uint64(b), uint64(n), uint64(ca), uint64(cb), uint64(hw))
}
func (g *GraphOps) SplitChannels(da, db, dy Ptr, n, ca, cb, hw int) {
	g.record("SplitChannels", func() { g.Device.SplitChannels(da, db, dy, n, ca, cb, hw) },
		uint64(da), uint64(db), uint64(dy), uint64(n), uint64(ca), uint64(cb), uint64(hw))
}
func (g *GraphOps) Transpose12(y, x Ptr, n, i, j int) {
	g.record("Transpose12", func() { g.Device.Transpose12(y, x, n, i, j) }, uint64(y), uint64(x), uint64(n), uint64(i), uint64(j))
}
func (g *GraphOps) Attention(o, q, k, v Ptr, a kernels.AttnDims) {
	g.record("Attention", func() { g.Device.Attention(o, q, k, v, a) }, uint64(o), uint64(q), uint64(k), uint64(v),
		uint64(a.B), uint64(a.T), uint64(a.Heads), uint64(a.HeadDim), fb(a.Scale))
}
func (g *GraphOps) AttentionBackward(dq, dk, dv, do, q, k, v Ptr, a kernels.AttnDims) {
	g.record("AttentionBackward", func() { g.Device.AttentionBackward(dq, dk, dv, do, q, k, v, a) },
		uint64(dq), uint64(dk), uint64(dv), uint64(do), uint64(q), uint64(k), uint64(v),
		uint64(a.B), uint64(a.T), uint64(a.Heads), uint64(a.HeadDim), fb(a.Scale))
}
func (g *GraphOps) Conv2D(y, x, w, b Ptr, c kernels.ConvDims) {
	g.record("Conv2D", func() { g.Device.Conv2D(y, x, w, b, c) }, append(dims(c), uint64(y), uint64(x), uint64(w), uint64(b))...)
}
func (g *GraphOps) Conv2DBackwardData(dx, dy, w Ptr, c kernels.ConvDims) {
	g.record("Conv2DBackwardData", func() { g.Device.Conv2DBackwardData(dx, dy, w, c) }, append(dims(c), uint64(dx), uint64(dy), uint64(w))...)
}
func (g *GraphOps) Conv2DBackwardFilter(dw, db, dy, x Ptr, c kernels.ConvDims) {
	g.record("Conv2DBackwardFilter", func() { g.Device.Conv2DBackwardFilter(dw, db, dy, x, c) },
		append(dims(c), uint64(dw), uint64(db), uint64(dy), uint64(x))...)
}
func (g *GraphOps) Linear(y, x, w, b Ptr, m, in, out int) {
	g.record("Linear", func() { g.Device.Linear(y, x, w, b, m, in, out) },
		uint64(y), uint64(x), uint64(w), uint64(b), uint64(m), uint64(in), uint64(out))
}
func (g *GraphOps) LinearBackward(dx, dw, db, dy, x, w Ptr, m, in, out int) {
	g.record("LinearBackward", func() { g.Device.LinearBackward(dx, dw, db, dy, x, w, m, in, out) },
		uint64(dx), uint64(dw), uint64(db), uint64(dy), uint64(x), uint64(w), uint64(m), uint64(in), uint64(out))
}
func gnDims(d kernels.GroupNormDims) []uint64 {
	s := uint64(0)
	if d.SiLU {
		s = 1
	}
	return []uint64{uint64(d.N), uint64(d.C), uint64(d.HW), uint64(d.Groups), fb(d.Eps), s}
}
func (g *GraphOps) GroupNorm(y, mean, rstd, x, gamma, beta Ptr, d kernels.GroupNormDims) {
	g.record("GroupNorm", func() { g.Device.GroupNorm(y, mean, rstd, x, gamma, beta, d) },
		append(gnDims(d), uint64(y), uint64(mean), uint64(rstd), uint64(x), uint64(gamma), uint64(beta))...)
}
func (g *GraphOps) GroupNormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta Ptr, d kernels.GroupNormDims) {
	g.record("GroupNormBackward", func() { g.Device.GroupNormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, d) },
		append(gnDims(d), uint64(dx), uint64(dgamma), uint64(dbeta), uint64(dy), uint64(x), uint64(mean), uint64(rstd),
			uint64(gamma), uint64(beta))...)
}
func (g *GraphOps) AdamW(p, m, v, gr Ptr, h kernels.AdamWParams, step int, n int) {
	g.record("AdamW", func() { g.Device.AdamW(p, m, v, gr, h, step, n) }, uint64(p), uint64(m), uint64(v), uint64(gr),
		fb(h.LR), fb(h.Beta1), fb(h.Beta2), fb(h.Eps), fb(h.WeightDecay), uint64(step), uint64(n))
}
func (g *GraphOps) EMA(ema, p Ptr, decay float32, n int) {
	g.record("EMA", func() { g.Device.EMA(ema, p, decay, n) }, uint64(ema), uint64(p), fb(decay), uint64(n))
}
func (g *GraphOps) Norm(dst, x Ptr, n int) {
	g.record("Norm", func() { g.Device.Norm(dst, x, n) }, uint64(dst), uint64(x), uint64(n))
}
func (g *GraphOps) ClipToNorm(x, norm Ptr, maxNorm float32, n int) {
	g.record("ClipToNorm", func() { g.Device.ClipToNorm(x, norm, maxNorm, n) }, uint64(x), uint64(norm), fb(maxNorm), uint64(n))
}
func (g *GraphOps) Dropout(y, x Ptr, p float32, seed uint64, offset, n int) {
	g.record("Dropout", func() { g.Device.Dropout(y, x, p, seed, offset, n) }, uint64(y), uint64(x), fb(p), seed, uint64(offset), uint64(n))
}
func (g *GraphOps) DiffusionLoss(loss, terms, dout, out, x0, noise, coef Ptr, dm kernels.DiffusionLossDims) {
	l, r := uint64(0), uint64(0)
	if dm.Learned {
		l = 1
	}
	if dm.Range {
		r = 1
	}
	g.record("DiffusionLoss", func() { g.Device.DiffusionLoss(loss, terms, dout, out, x0, noise, coef, dm) },
		uint64(loss), uint64(terms), uint64(dout), uint64(out), uint64(x0), uint64(noise), uint64(coef), uint64(dm.N), uint64(dm.D), l, r)
}
