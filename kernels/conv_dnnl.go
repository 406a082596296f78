package kernels

import (
	"iter"
	"sync/atomic"
	"unsafe"
)

// Convolutions through oneDNN, planned so that no OpenMP team spans the
// cores: each chunk of the work runs its own primitives on its own OS
// thread with one OpenMP thread. (OpenMP teams spin-wait at their barriers
// and after each region: on a 2-core machine they stall whenever another
// process, or this process's next Go op, takes a core.
// BenchmarkConvThenGroupNorm at batch 1: 1.34 ms per conv+GroupNorm with a
// 2-thread OpenMP team, 0.79 ms split by output channels.)
//
// With more threads than chunks, each chunk runs an OpenMP team of
// Threads/chunks threads.
//
// The passes split the batch over the threads (in the forward pass of a
// convolution with small weights, into chunks of two images that the
// threads take in turn: smallChunkWeights), or the output channels
// when there is one image or the images are small (see planDNNL); split by
// output channels, each chunk sees the whole batch and, in the backward
// filter pass, owns its rows of dw (no reduction), while the backward data
// pass sums the chunks' partial dx.
//
// 1x1 convolutions go to oneDNN's jit_1x1 kernels in the forward pass,
// where they measured faster than the direct GEMM (282 against 240
// GFLOP/s, 128 -> 256 channels at 16x16, batch 4), and to the direct GEMM
// in both backward passes, where the GEMM measured faster.

// dnnlPlan says how one convolution is split.
type dnnlPlan struct {
	w   int  // chunks
	g   int  // goroutines, each taking the next chunk until none is left
	byK bool // split output channels, not images
	omp int  // OpenMP threads per chunk
}

// smallChunkWeights is the most weight bytes a forward convolution may
// have to run in chunks of two images (at most four chunks per thread,
// each goroutine taking the next chunk left) instead of one chunk per
// thread. The small chunk's normalised source and output stay in its
// core's L2 between the norm, the convolution and the copy out, and a
// core slowed by another tenant takes fewer chunks: the diffusers
// fixture's UNet at batch 16, alternating rounds on this shared 2-core
// host, 38-55 ms per forward (median 50.0) with a chunk per thread and
// 38-40 ms (median 39.3, one round 54) in chunks of two images. With
// larger weights (>= 128 channels in and out) each chunk rereads them,
// oneDNN's Winograd kernels want more tiles per call, and one-image
// chunks measured up to 2x slower (256 channels at 16x16, batch 4).
const smallChunkWeights = 512 << 10

// convPass names the three convolution passes.
type convPass int

const (
	passForward convPass = iota
	passBackwardData
	passBackwardFilter
)

// planDNNL returns the split of d for a pass and whether oneDNN runs it
// (false when oneDNN is off, rejects a chunk shape, or for the backward
// passes of 1x1 convolutions, where the direct GEMM measured faster: the
// caller then uses im2col or the direct GEMM).
func (c *CPU) planDNNL(d ConvDims, pass convPass) (dnnlPlan, bool) {
	if c.dconv == nil || (d.direct() && pass != passForward) {
		return dnnlPlan{}, false
	}
	filter := pass == passBackwardFilter
	p := dnnlPlan{w: max(1, min(c.threads, d.N)), omp: 1}
	// By output channels also where image chunks would be small, as
	// measured (256 channels, batch 4): backward filter when the output
	// has at most 64 positions (8x8: 243 -> 339 GFLOP/s; slower at 16x16
	// and 32x32, where reordering the strided dy chunks costs more); the
	// other passes when the whole batch has at most 512 output positions
	// (8x8: 344 -> 389 forward, 380 -> 406 backward data; 4x4: 217 -> 270
	// and 240 -> 342; no gain at 8x8 with batch 16).
	ohw := d.OutH() * d.OutW()
	small := ohw <= 64
	if !filter {
		small = d.N*ohw <= 512
	}
	if c.threads > 1 && d.K >= 32 && (d.N == 1 || small) {
		p = dnnlPlan{w: min(c.threads, d.K/16), byK: true}
	} else if pass == passForward && 4*d.K*d.C*d.R*d.S <= smallChunkWeights {
		p.w = max(p.w, min(d.N/2, 4*c.threads))
	}
	p.g = min(p.w, c.threads)
	// Fewer chunks than threads (many cores, small batch): each chunk gets
	// an OpenMP team of the threads left over.
	p.omp = max(1, c.threads/p.w)
	for i := 0; i < p.w; i++ {
		cd, _, _ := p.chunk(d, i)
		for g := range p.runners(i) {
			if c.dconv.get(cd, g, p.yStride(d), p.omp) == nil {
				return dnnlPlan{}, false
			}
		}
	}
	return p, true
}

// runners returns the goroutines that may run chunk i: goroutine i when
// there is a chunk per goroutine, else any (each has its own primitives).
func (p dnnlPlan) runners(i int) iter.Seq[int] {
	return func(yield func(int) bool) {
		if p.w == p.g {
			yield(i)
			return
		}
		for g := 0; g < p.g; g++ {
			if !yield(g) {
				return
			}
		}
	}
}

// yStride is the channel distance between images in a chunk's y or dy.
func (p dnnlPlan) yStride(d ConvDims) int {
	if p.byK {
		return d.K
	}
	return 0
}

// chunk returns chunk i's dims and its range [lo, hi): images, or output
// channels (multiples of 16, for oneDNN's blocked layouts) when byK.
func (p dnnlPlan) chunk(d ConvDims, i int) (ConvDims, int, int) {
	if p.byK {
		lo, hi := align16(i*d.K/p.w), align16((i+1)*d.K/p.w)
		if i == p.w-1 {
			hi = d.K
		}
		d.K = hi - lo
		return d, lo, hi
	}
	lo, hi := i*d.N/p.w, (i+1)*d.N/p.w
	d.N = hi - lo
	return d, lo, hi
}

// yChunk returns the part of a (N, K, OH*OW) buffer that output channels
// lo..hi-1 of every image span (images stay K*OH*OW apart).
func yChunk(y []float32, d ConvDims, lo, hi int) []float32 {
	ohw := d.OutH() * d.OutW()
	return y[lo*ohw : (d.N-1)*d.K*ohw+hi*ohw]
}

// dnnlRun runs fn(chunk, lo, hi, prims) for each chunk of p on p.g
// goroutines (the caller's one of them), each starting with its own chunk
// and then taking the next one not yet taken, and records the first
// chunk's error.
func (c *CPU) dnnlRun(op string, d ConvDims, p dnnlPlan, fn func(i, lo, hi int, prims *dnnlConv) error) {
	ys := p.yStride(d)
	var next atomic.Int64 // the chunks after the first p.g, taken in turn
	next.Store(int64(p.g))
	err := c.parallelErr(p.g, 1, func(g, _, _ int) error {
		var first error
		for i := g; i < p.w; i = int(next.Add(1) - 1) {
			cd, lo, hi := p.chunk(d, i)
			if err := fn(i, lo, hi, c.dconv.get(cd, g, ys, p.omp)); err != nil && first == nil {
				first = err
			}
		}
		return first
	})
	if err != nil {
		c.fail("%s (oneDNN): %v", op, err)
	}
}

func (c *CPU) dnnlForward(y, x, wt, b []float32, d ConvDims) bool {
	return c.dnnlForwardIO(y, x, wt, b, d, convIO{})
}

// convIO gives a forward convolution its source and takes its output in
// nChw16c buffers instead of NCHW ones (see blockedConv): fill(lo, hi)
// writes images lo..hi-1 of the source into src (elem bytes per value)
// before their convolution, and drain(lo, hi) reads their output from
// dst after it. Zero fields: x is reordered from NCHW, y into it.
type convIO struct {
	src   unsafe.Pointer
	elem  int
	fill  func(lo, hi int)
	dst   unsafe.Pointer
	drain func(lo, hi int)
}

// dnnlForwardIO is dnnlForward with io. Each chunk of images fills and
// drains its own images just before and after its convolution, on the
// same thread, so they are still in that core's cache; split by output
// channels (no dst then), the whole source is filled first, over the
// threads.
func (c *CPU) dnnlForwardIO(y, x, wt, b []float32, d ConvDims, io convIO) bool {
	p, ok := c.planDNNL(d, passForward)
	if !ok || (p.byK && io.dst != nil) {
		return false
	}
	chw, kohw, crs := d.C*d.H*d.W, d.K*d.OutH()*d.OutW(), d.C*d.R*d.S
	if io.src != nil && p.byK {
		c.parallel(d.N, 1, func(_, lo, hi int) { io.fill(lo, hi) })
	}
	c.dnnlRun("Conv2D", d, p, func(_, lo, hi int, prims *dnnlConv) error {
		if p.byK { // output channels lo..hi-1 of every image
			var bk []float32
			if b != nil {
				bk = b[lo:hi]
			}
			var xs []float32
			if io.src == nil {
				xs = x[:d.N*chw]
			}
			return prims.forward(yChunk(y, d, lo, hi), xs, wt[lo*crs:hi*crs], bk, c.constW, io.src, nil)
		}
		var xs, ys []float32
		var src, dst unsafe.Pointer
		if io.src == nil {
			xs = x[lo*chw : hi*chw]
		} else {
			io.fill(lo, hi)
			src = unsafe.Add(io.src, lo*chw*io.elem)
		}
		if io.dst == nil {
			ys = y[lo*kohw : hi*kohw]
		} else {
			dst = unsafe.Add(io.dst, lo*kohw*4)
		}
		if err := prims.forward(ys, xs, wt, b, c.constW, src, dst); err != nil {
			return err
		}
		if io.dst != nil {
			io.drain(lo, hi)
		}
		return nil
	})
	return true
}

// blockedConv reports whether the forward convolution d (with bias when
// bias) can read its source in nChw16c, with the bytes per value (2 in
// bf16 mode, else 4), and whether it can also leave its output in
// nChw16c (float32; chunks of images only). It asks every chunk's
// primitive (blockedIO).
func (c *CPU) blockedConv(d ConvDims, bias bool) (elem int, src, dst bool) {
	p, ok := c.planDNNL(d, passForward)
	if !ok {
		return 0, false, false
	}
	src, dst = true, !p.byK
	ys := p.yStride(d)
	for i := 0; i < p.w; i++ {
		cd, _, _ := p.chunk(d, i)
		for g := range p.runners(i) {
			s, o := c.dconv.get(cd, g, ys, p.omp).blockedIO(bias)
			src, dst = src && s, dst && o
		}
	}
	elem = 4
	if c.bf16 {
		elem = 2
	}
	return elem, src, dst
}

func (c *CPU) dnnlBackwardData(dx, dy, wt []float32, d ConvDims) bool {
	p, ok := c.planDNNL(d, passBackwardData)
	if !ok {
		return false
	}
	chw, kohw, crs := d.C*d.H*d.W, d.K*d.OutH()*d.OutW(), d.C*d.R*d.S
	if !p.byK {
		c.dnnlRun("Conv2DBackwardData", d, p, func(_, lo, hi int, prims *dnnlConv) error {
			return prims.backwardData(dx[lo*chw:hi*chw], dy[lo*kohw:hi*kohw], wt)
		})
		return true
	}
	// Output-channel chunks (one image) each give a partial dx; chunk 0
	// writes dx, the others scratch buffers summed into it.
	n := d.N * chw
	var part []float32
	if p.w > 1 {
		part = c.ws.get((p.w - 1) * n)
		defer c.ws.put(part)
	}
	c.dnnlRun("Conv2DBackwardData", d, p, func(i, lo, hi int, prims *dnnlConv) error {
		out := dx[:n]
		if i > 0 {
			out = part[(i-1)*n : i*n]
		}
		return prims.backwardData(out, yChunk(dy, d, lo, hi), wt[lo*crs:hi*crs])
	})
	for i := 1; i < p.w; i++ {
		for j, v := range part[(i-1)*n : i*n] {
			dx[j] += v
		}
	}
	return true
}

func (c *CPU) dnnlBackwardFilter(dw, db, dy, x []float32, d ConvDims) bool {
	p, ok := c.planDNNL(d, passBackwardFilter)
	if !ok {
		return false
	}
	chw, kohw, crs := d.C*d.H*d.W, d.K*d.OutH()*d.OutW(), d.C*d.R*d.S
	if p.byK { // disjoint rows of dw and db: no reduction
		c.dnnlRun("Conv2DBackwardFilter", d, p, func(_, lo, hi int, prims *dnnlConv) error {
			var dbk []float32
			if db != nil {
				dbk = db[lo:hi]
			}
			return prims.backwardWeights(dw[lo*crs:hi*crs], dbk, yChunk(dy, d, lo, hi), x[:d.N*chw])
		})
		return true
	}
	nw := d.K * crs
	// Image chunks each give partial dw, db: chunk 0 writes dw and db, the
	// others scratch buffers summed into them.
	var part []float32
	if p.w > 1 {
		part = c.ws.get((p.w - 1) * (nw + d.K))
		defer c.ws.put(part)
	}
	c.dnnlRun("Conv2DBackwardFilter", d, p, func(i, lo, hi int, prims *dnnlConv) error {
		pw, pb := dw[:nw], db
		if i > 0 {
			off := (i - 1) * (nw + d.K)
			pw = part[off : off+nw]
			if db != nil {
				pb = part[off+nw : off+nw+d.K]
			}
		}
		return prims.backwardWeights(pw, pb, dy[lo*kohw:hi*kohw], x[lo*chw:hi*chw])
	})
	for i := 1; i < p.w; i++ {
		off := (i - 1) * (nw + d.K)
		for j, v := range part[off : off+nw] {
			dw[j] += v
		}
		if db != nil {
			for j, v := range part[off+nw : off+nw+d.K] {
				db[j] += v
			}
		}
	}
	return true
}
