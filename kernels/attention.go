package kernels

func (c *CPU) checkAttn(op string, d AttnDims) bool {
	if d.B < 1 || d.T < 1 || d.Heads < 1 || d.HeadDim < 1 {
		c.fail("%s: dims %+v: B, T, Heads, HeadDim must be >= 1", op, d)
		return false
	}
	return true
}

// Attention computes o = softmax(q k^T * Scale) v per batch item and head
// (Vaswani et al. 2017), softmax over keys in float32. q, k, v, o are
// (B, T, Heads*HeadDim); head h uses columns h*HeadDim..(h+1)*HeadDim-1.
// Each (batch, head) pair is two GEMMs around a row softmax of its (T, T)
// scores, the pairs split over the threads; the softmax's division by the
// row sums is applied to o's HeadDim columns instead of the T scores. o
// must not alias q, k or v.
func (c *CPU) Attention(o, q, k, v []float32, d AttnDims) {
	const op = "Attention"
	if !c.checkAttn(op, d) {
		return
	}
	hd := d.Heads * d.HeadDim
	n := d.B * d.T * hd
	if !c.has(op, "o", o, n) || !c.has(op, "q", q, n) || !c.has(op, "k", k, n) || !c.has(op, "v", v, n) {
		return
	}
	pairs := d.B * d.Heads
	serial := pairs < c.threads
	c.images(pairs, serial, func(_, lo, hi int) {
		buf := c.ws.get(d.T*d.T + d.T)
		defer c.ws.put(buf)
		p, inv := buf[:d.T*d.T], buf[d.T*d.T:]
		for i := lo; i < hi; i++ {
			off := (i/d.Heads)*d.T*hd + (i%d.Heads)*d.HeadDim
			c.mm(serial, false, true, d.T, d.T, d.HeadDim, d.Scale, q[off:], hd, k[off:], hd, 0, p, d.T)
			for t := 0; t < d.T; t++ {
				r := p[t*d.T : (t+1)*d.T]
				inv[t] = 1 / expSum(r, maxOf(r))
			}
			c.mm(serial, false, false, d.T, d.HeadDim, d.T, 1, p, d.T, v[off:], hd, 0, o[off:], hd)
			for t := 0; t < d.T; t++ {
				row := o[off+t*hd : off+t*hd+d.HeadDim]
				axbyc(row, row, inv[t], 0, 0)
			}
		}
	})
}

// scores sets p (T, T) = softmax_rows(scale * qh kh^T) for one head whose
// rows have stride Heads*HeadDim.
func (c *CPU) scores(par bool, p, qh, kh []float32, d AttnDims) {
	hd := d.Heads * d.HeadDim
	c.mm(par, false, true, d.T, d.T, d.HeadDim, d.Scale, qh, hd, kh, hd, 0, p, d.T)
	for t := 0; t < d.T; t++ {
		softmaxRow(p[t*d.T : (t+1)*d.T])
	}
}

// softmaxRow replaces r by exp(r - max r) / sum exp(r - max r).
func softmaxRow(r []float32) {
	inv := 1 / expSum(r, maxOf(r))
	for j := range r {
		r[j] *= inv
	}
}

// AttentionBackward computes dq, dk, dv of Attention given do, recomputing
// P = softmax(Scale q k^T) per (batch, head):
//
//	dv = P^T do;  dP = do v^T;  dS = P * (dP - rowsum(P * dP))
//	dq = Scale * dS k;  dk = Scale * dS^T q
//
// Any of dq, dk, dv may be nil to skip it; none may alias an input.
func (c *CPU) AttentionBackward(dq, dk, dv, do, q, k, v []float32, d AttnDims) {
	const op = "AttentionBackward"
	if !c.checkAttn(op, d) {
		return
	}
	hd := d.Heads * d.HeadDim
	n := d.B * d.T * hd
	if !c.has(op, "do", do, n) || !c.has(op, "q", q, n) || !c.has(op, "k", k, n) || !c.has(op, "v", v, n) ||
		!c.opt(op, "dq", dq, n) || !c.opt(op, "dk", dk, n) || !c.opt(op, "dv", dv, n) {
		return
	}
	pairs := d.B * d.Heads
	serial := pairs < c.threads
	c.images(pairs, serial, func(_, lo, hi int) {
		tt := d.T * d.T
		buf := c.ws.get(2 * tt)
		defer c.ws.put(buf)
		p, dp := buf[:tt], buf[tt:]
		for i := lo; i < hi; i++ {
			off := (i/d.Heads)*d.T*hd + (i%d.Heads)*d.HeadDim
			c.scores(serial, p, q[off:], k[off:], d)
			if dv != nil {
				c.mm(serial, true, false, d.T, d.HeadDim, d.T, 1, p, d.T, do[off:], hd, 0, dv[off:], hd)
			}
			if dq == nil && dk == nil {
				continue
			}
			c.mm(serial, false, true, d.T, d.T, d.HeadDim, 1, do[off:], hd, v[off:], hd, 0, dp, d.T)
			for t := 0; t < d.T; t++ {
				pr, gr := p[t*d.T:(t+1)*d.T], dp[t*d.T:(t+1)*d.T]
				var dot float32
				for j, pv := range pr {
					dot += pv * gr[j]
				}
				for j, pv := range pr {
					gr[j] = pv * (gr[j] - dot)
				}
			}
			if dq != nil {
				c.mm(serial, false, false, d.T, d.HeadDim, d.T, d.Scale, dp, d.T, k[off:], hd, 0, dq[off:], hd)
			}
			if dk != nil {
				c.mm(serial, true, false, d.T, d.HeadDim, d.T, d.Scale, dp, d.T, q[off:], hd, 0, dk[off:], hd)
			}
		}
	})
}
