package kernels

// Linear sets y[m,o] = b[o] + sum_i x[m,i] * w[o,i]: y = x w^T + b with
// x (M, In), w (Out, In), b (Out) or nil, y (M, Out).
func (c *CPU) Linear(y, x, w, b []float32, m, in, out int) {
	const op = "Linear"
	if !c.sizes(op, m, in, out) || !c.has(op, "y", y, m*out) || !c.has(op, "x", x, m*in) ||
		!c.has(op, "w", w, out*in) || !c.opt(op, "b", b, out) {
		return
	}
	beta := float32(0)
	if b != nil {
		for r := 0; r < m; r++ {
			copy(y[r*out:(r+1)*out], b[:out])
		}
		beta = 1
	}
	if c.linearBF16(y, x, w, beta, m, in, out) {
		return
	}
	c.mm(true, false, true, m, out, in, 1, x, in, w, in, beta, y, out)
}

// LinearBackward sets dx = dy w (M, In), dw = dy^T x (Out, In) and
// db[o] = sum_m dy[m,o] (Out); any of dx, dw, db may be nil to skip it.
func (c *CPU) LinearBackward(dx, dw, db, dy, x, w []float32, m, in, out int) {
	const op = "LinearBackward"
	if !c.sizes(op, m, in, out) || !c.has(op, "dy", dy, m*out) || !c.opt(op, "dx", dx, m*in) ||
		!c.opt(op, "dw", dw, out*in) || !c.opt(op, "db", db, out) {
		return
	}
	if dx != nil {
		if !c.has(op, "w", w, out*in) {
			return
		}
		c.mm(true, false, false, m, in, out, 1, dy, out, w, in, 0, dx, in)
	}
	if dw != nil {
		if !c.has(op, "x", x, m*in) {
			return
		}
		c.mm(true, true, false, out, in, m, 1, dy, out, x, in, 0, dw, in)
	}
	if db != nil {
		clear(db[:out])
		for r := 0; r < m; r++ {
			row := dy[r*out : (r+1)*out]
			for o, v := range row {
				db[o] += v
			}
		}
	}
}
