package kernels

// Convolutions through oneDNN. With several threads and at least two
// images the batch is split into one chunk per thread, each run by its
// own primitives on its own OS thread with one OpenMP thread: no OpenMP
// barriers between the cores, which on a shared 2-core machine otherwise
// stall whenever another process takes a core. A single image runs one
// primitive with Threads OpenMP threads. 1x1 convolutions also go to
// oneDNN (its jit_1x1 kernels measured faster than the direct GEMM here).

// dnnlChunks returns the chunk count for d, or 0 when oneDNN is off or
// rejects one of the chunk shapes (the caller then uses im2col).
func (c *CPU) dnnlChunks(d ConvDims) int {
	if c.dconv == nil {
		return 0
	}
	w := max(1, min(c.threads, d.N))
	for i := 0; i < w; i++ {
		if c.dconv.get(chunkDims(d, i, w), i) == nil {
			return 0
		}
	}
	return w
}

// chunkDims is d restricted to chunk i of w (images i*N/w .. (i+1)*N/w-1).
func chunkDims(d ConvDims, i, w int) ConvDims {
	lo, hi := i*d.N/w, (i+1)*d.N/w
	d.N = hi - lo
	return d
}

// dnnlRun runs fn(chunk, lo, hi, prims, ompThreads) for each chunk on its
// own goroutine (the caller's for the last) and reports the first error.
func (c *CPU) dnnlRun(op string, d ConvDims, w int, fn func(i, lo, hi int, p *dnnlConv, omp int) error) {
	omp := 1
	if w == 1 {
		omp = c.threads
	}
	errs := make([]error, w)
	c.parallel(w, 1, func(_, clo, chi int) {
		for i := clo; i < chi; i++ {
			lo, hi := i*d.N/w, (i+1)*d.N/w
			errs[i] = fn(i, lo, hi, c.dconv.get(chunkDims(d, i, w), i), omp)
		}
	})
	for _, err := range errs {
		if err != nil {
			c.fail("%s (oneDNN): %v", op, err)
			return
		}
	}
}

func (c *CPU) dnnlForward(y, x, wt, b []float32, d ConvDims) bool {
	w := c.dnnlChunks(d)
	if w == 0 {
		return false
	}
	chw, kohw := d.C*d.H*d.W, d.K*d.OutH()*d.OutW()
	c.dnnlRun("Conv2D", d, w, func(_, lo, hi int, p *dnnlConv, omp int) error {
		return p.forward(y[lo*kohw:hi*kohw], x[lo*chw:hi*chw], wt, b, omp)
	})
	return true
}

func (c *CPU) dnnlBackwardData(dx, dy, wt []float32, d ConvDims) bool {
	w := c.dnnlChunks(d)
	if w == 0 {
		return false
	}
	chw, kohw := d.C*d.H*d.W, d.K*d.OutH()*d.OutW()
	c.dnnlRun("Conv2DBackwardData", d, w, func(_, lo, hi int, p *dnnlConv, omp int) error {
		return p.backwardData(dx[lo*chw:hi*chw], dy[lo*kohw:hi*kohw], wt, omp)
	})
	return true
}

func (c *CPU) dnnlBackwardFilter(dw, db, dy, x []float32, d ConvDims) bool {
	w := c.dnnlChunks(d)
	if w == 0 {
		return false
	}
	chw, kohw := d.C*d.H*d.W, d.K*d.OutH()*d.OutW()
	nw := d.K * d.C * d.R * d.S
	// chunk 0 writes dw and db; the others write partials summed below.
	var part []float32
	if w > 1 {
		part = c.ws.get((w - 1) * (nw + d.K))
		defer c.ws.put(part)
	}
	c.dnnlRun("Conv2DBackwardFilter", d, w, func(i, lo, hi int, p *dnnlConv, omp int) error {
		pw, pb := dw[:nw], db
		if i > 0 {
			off := (i - 1) * (nw + d.K)
			pw = part[off : off+nw]
			if db != nil {
				pb = part[off+nw : off+nw+d.K]
			}
		}
		return p.backwardWeights(pw, pb, dy[lo*kohw:hi*kohw], x[lo*chw:hi*chw], omp)
	})
	for i := 1; i < w; i++ {
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
