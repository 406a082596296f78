package kernels

// checkConv validates d and the buffer sizes shared by the conv ops.
func (c *CPU) checkConv(op string, d ConvDims) bool {
	if err := d.Validate(); err != nil {
		c.fail("%s: %v", op, err)
		return false
	}
	return true
}

// direct reports a 1x1, stride-1, unpadded convolution: a plain GEMM on
// each image's (C, HW) matrix, with no im2col.
func (d ConvDims) direct() bool {
	return d.R == 1 && d.S == 1 && d.StrideH == 1 && d.StrideW == 1 &&
		d.PadTop == 0 && d.PadLeft == 0 && d.PadBottom == 0 && d.PadRight == 0
}

// Conv2D computes y[n,k,oh,ow] = b[k] + sum_{c,r,s} w[k,c,r,s] *
// x[n,c,oh*StrideH-PadTop+r, ow*StrideW-PadLeft+s] (zero outside x), as
// one GEMM per image on its im2col matrix (no im2col for 1x1 convs):
// y[n] (K, OH*OW) = w (K, C*R*S) cols (C*R*S, OH*OW). Images are split over
// the threads; with fewer images than threads each GEMM is split instead.
func (c *CPU) Conv2D(y, x, w, b []float32, d ConvDims) {
	const op = "Conv2D"
	if !c.checkConv(op, d) {
		return
	}
	ohw := d.OutH() * d.OutW()
	crs, chw, kohw := d.C*d.R*d.S, d.C*d.H*d.W, d.K*ohw
	if !c.has(op, "y", y, d.N*kohw) || !c.has(op, "x", x, d.N*chw) || !c.has(op, "w", w, d.K*crs) || !c.opt(op, "b", b, d.K) {
		return
	}
	if c.winoFits(d) {
		c.winoForward(op, y, nil, w, b, d, func(src []float32, lo, hi int) { blockImage(src, x, lo, hi, d.H, d.W) })
		return
	}
	if c.dnnlForward(y, x, w, b, d) {
		return
	}
	perImage := d.N < c.threads
	direct := d.direct()
	c.images(d.N, perImage, func(_, lo, hi int) {
		var cols []float32
		if !direct {
			cols = c.ws.get(crs * ohw)
			defer c.ws.put(cols)
		}
		for n := lo; n < hi; n++ {
			xn, yn := x[n*chw:(n+1)*chw], y[n*kohw:(n+1)*kohw]
			src := xn
			if !direct {
				im2col(cols, xn, d)
				src = cols
			}
			beta := float32(0)
			if b != nil {
				for k := 0; k < d.K; k++ {
					fill(yn[k*ohw:(k+1)*ohw], b[k])
				}
				beta = 1
			}
			c.mm(perImage, false, false, d.K, ohw, crs, 1, w, crs, src, ohw, beta, yn, ohw)
		}
	})
}

// Conv2DBackwardData computes dx = dL/dx of Conv2D given dy:
// dcols (C*R*S, OH*OW) = w^T dy[n], then dx[n] = col2im(dcols) (for 1x1
// convs dx[n] = w^T dy[n] directly).
func (c *CPU) Conv2DBackwardData(dx, dy, w []float32, d ConvDims) {
	const op = "Conv2DBackwardData"
	if !c.checkConv(op, d) {
		return
	}
	ohw := d.OutH() * d.OutW()
	crs, chw, kohw := d.C*d.R*d.S, d.C*d.H*d.W, d.K*ohw
	if !c.has(op, "dx", dx, d.N*chw) || !c.has(op, "dy", dy, d.N*kohw) || !c.has(op, "w", w, d.K*crs) {
		return
	}
	if c.dnnlBackwardData(dx, dy, w, d) {
		return
	}
	perImage := d.N < c.threads
	direct := d.direct()
	c.images(d.N, perImage, func(_, lo, hi int) {
		var cols []float32
		if !direct {
			cols = c.ws.get(crs * ohw)
			defer c.ws.put(cols)
		}
		for n := lo; n < hi; n++ {
			dxn, dyn := dx[n*chw:(n+1)*chw], dy[n*kohw:(n+1)*kohw]
			if direct {
				c.mm(perImage, true, false, d.C, ohw, d.K, 1, w, crs, dyn, ohw, 0, dxn, ohw)
				continue
			}
			c.mm(perImage, true, false, crs, ohw, d.K, 1, w, crs, dyn, ohw, 0, cols, ohw)
			col2im(dxn, cols, d)
		}
	})
}

// Conv2DBackwardFilter computes dw[k,c,r,s] = sum_n (dy[n] cols[n]^T)
// (K, C*R*S) and, when db is not nil, db[k] = sum_{n,p} dy[n,k,p]. Each
// thread accumulates its images into its own partial dw, summed at the end.
func (c *CPU) Conv2DBackwardFilter(dw, db, dy, x []float32, d ConvDims) {
	const op = "Conv2DBackwardFilter"
	if !c.checkConv(op, d) {
		return
	}
	ohw := d.OutH() * d.OutW()
	crs, chw, kohw := d.C*d.R*d.S, d.C*d.H*d.W, d.K*ohw
	if !c.has(op, "dw", dw, d.K*crs) || !c.opt(op, "db", db, d.K) || !c.has(op, "dy", dy, d.N*kohw) || !c.has(op, "x", x, d.N*chw) {
		return
	}
	if c.dnnlBackwardFilter(dw, db, dy, x, d) {
		return
	}
	direct := d.direct()
	perImage := d.N < c.threads
	workers := c.threads
	if perImage {
		workers = 1
	}
	var partial []float32
	if workers > 1 {
		partial = c.ws.get((workers - 1) * d.K * crs)
		defer c.ws.put(partial)
	}
	c.images(d.N, perImage, func(wk, lo, hi int) {
		acc := dw[:d.K*crs]
		if wk > 0 {
			acc = partial[(wk-1)*d.K*crs : wk*d.K*crs]
		}
		var cols []float32
		if !direct {
			cols = c.ws.get(crs * ohw)
			defer c.ws.put(cols)
		}
		for n := lo; n < hi; n++ {
			src := x[n*chw : (n+1)*chw]
			if !direct {
				im2col(cols, src, d)
				src = cols
			}
			beta := float32(1)
			if n == lo {
				beta = 0
			}
			c.mm(perImage, false, true, d.K, crs, ohw, 1, dy[n*kohw:(n+1)*kohw], ohw, src, ohw, beta, acc, crs)
		}
	})
	for wk := 1; wk < workers; wk++ {
		p := partial[(wk-1)*d.K*crs : wk*d.K*crs]
		for i, v := range p {
			dw[i] += v
		}
	}
	if db != nil {
		for k := 0; k < d.K; k++ {
			var s float32
			for n := 0; n < d.N; n++ {
				s += sum32(dy[n*kohw+k*ohw : n*kohw+(k+1)*ohw])
			}
			db[k] = s
		}
	}
}

// images runs fn over the n images: on one goroutine when serial (the
// GEMMs inside are split instead), else split over the threads.
func (c *CPU) images(n int, serial bool, fn func(worker, lo, hi int)) {
	if serial {
		fn(0, 0, n)
		return
	}
	c.parallel(n, 1, fn)
}

func fill(s []float32, v float32) {
	for i := range s {
		s[i] = v
	}
}

// im2col writes one image x (C, H, W) as cols (C*R*S, OH*OW) with
// cols[(c*R+r)*S+s, oh*OW+ow] = x[c, oh*StrideH-PadTop+r, ow*StrideW-PadLeft+s]
// (zero outside x).
func im2col(cols, x []float32, d ConvDims) {
	oh, ow := d.OutH(), d.OutW()
	ohw := oh * ow
	for ch := 0; ch < d.C; ch++ {
		xc := x[ch*d.H*d.W : (ch+1)*d.H*d.W]
		for r := 0; r < d.R; r++ {
			for s := 0; s < d.S; s++ {
				row := cols[((ch*d.R+r)*d.S+s)*ohw : ((ch*d.R+r)*d.S+s+1)*ohw]
				// valid output columns: 0 <= j*sw - pl + s < W.
				j0, j1 := validRange(ow, d.StrideW, s-d.PadLeft, d.W)
				for i := 0; i < oh; i++ {
					dst := row[i*ow : (i+1)*ow]
					ih := i*d.StrideH - d.PadTop + r
					if ih < 0 || ih >= d.H || j0 >= j1 {
						clear(dst)
						continue
					}
					src := xc[ih*d.W : (ih+1)*d.W]
					clear(dst[:j0])
					if d.StrideW == 1 {
						copy(dst[j0:j1], src[j0+s-d.PadLeft:])
					} else {
						for j := j0; j < j1; j++ {
							dst[j] = src[j*d.StrideW+s-d.PadLeft]
						}
					}
					clear(dst[j1:])
				}
			}
		}
	}
}

// col2im is the adjoint of im2col: dx (C, H, W) = 0, then every cols entry
// is added back to the x position im2col read it from.
func col2im(dx, cols []float32, d ConvDims) {
	oh, ow := d.OutH(), d.OutW()
	ohw := oh * ow
	clear(dx[:d.C*d.H*d.W])
	for ch := 0; ch < d.C; ch++ {
		xc := dx[ch*d.H*d.W : (ch+1)*d.H*d.W]
		for r := 0; r < d.R; r++ {
			for s := 0; s < d.S; s++ {
				row := cols[((ch*d.R+r)*d.S+s)*ohw : ((ch*d.R+r)*d.S+s+1)*ohw]
				j0, j1 := validRange(ow, d.StrideW, s-d.PadLeft, d.W)
				if j0 >= j1 {
					continue
				}
				for i := 0; i < oh; i++ {
					ih := i*d.StrideH - d.PadTop + r
					if ih < 0 || ih >= d.H {
						continue
					}
					dst := xc[ih*d.W : (ih+1)*d.W]
					src := row[i*ow : (i+1)*ow]
					if d.StrideW == 1 {
						off := s - d.PadLeft
						seg := dst[j0+off : j1+off]
						for j, v := range src[j0:j1] {
							seg[j] += v
						}
					} else {
						for j := j0; j < j1; j++ {
							dst[j*d.StrideW+s-d.PadLeft] += src[j]
						}
					}
				}
			}
		}
	}
}

// validRange returns [j0, j1) of output positions j < out with
// 0 <= j*stride + off < size.
func validRange(out, stride, off, size int) (int, int) {
	j0 := 0
	if off < 0 {
		j0 = (-off + stride - 1) / stride
	}
	j1 := 0
	if size-1-off >= 0 {
		j1 = (size-1-off)/stride + 1
	}
	j1 = min(j1, out)
	if j0 > j1 {
		j0 = j1
	}
	return j0, j1
}
