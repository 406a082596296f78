package kernels

// The layers of OpenAI's ADM networks (Dhariwal & Nichol 2021,
// openai/guided-diffusion guided_diffusion/unet.py) that the diffusers
// UNet does not have: GroupNorm with FiLM scale-shift conditioning, 2x2
// average pooling, attention over a fused channel-major qkv tensor in both
// head orders, the classifier's attention-pool tokens, spatial means and
// ReLU.

// QKVAttnDims describes guided-diffusion's QKVAttention on a fused qkv
// tensor (B, 3*Heads*HeadDim, T), channel-major as a 1x1 convolution
// writes it, with output (B, Heads*HeadDim, T).
//
// With Legacy false (QKVAttention, use_new_attention_order=True) the
// channels are split into q, k, v first, then heads: q of head h is
// channels h*HeadDim.., k is Heads*HeadDim + h*HeadDim.., v is
// 2*Heads*HeadDim + h*HeadDim... With Legacy true (QKVAttentionLegacy, the
// default) heads come first: head h owns channels h*3*HeadDim.. holding
// its q, k and v in turn. The output of head h is channels h*HeadDim.. in
// both orders. Scale multiplies q.k (guided-diffusion scales q and k by
// HeadDim^-1/4 each, that is 1/sqrt(HeadDim) on the product).
type QKVAttnDims struct {
	B, T, Heads, HeadDim int
	Legacy               bool
	Scale                float32
}

// offsets returns the value offsets of head h of batch item b's q, k and
// v inside qkv, and of its output inside o; each is a (HeadDim, T) block
// with row stride T.
func (d QKVAttnDims) offsets(b, h int) (q, k, v, o int) {
	c, hd := d.Heads*d.HeadDim, d.HeadDim*d.T
	base := b * 3 * c * d.T
	if d.Legacy {
		q = base + h*3*hd
		return q, q + hd, q + 2*hd, b*c*d.T + h*hd
	}
	q = base + h*hd
	return q, q + c*d.T, q + 2*c*d.T, b*c*d.T + h*hd
}

func (c *CPU) checkQKV(op string, d QKVAttnDims) bool {
	if d.B < 1 || d.T < 1 || d.Heads < 1 || d.HeadDim < 1 {
		c.fail("%s: dims %+v: B, T, Heads, HeadDim must be >= 1", op, d)
		return false
	}
	return true
}

// GroupNormScaleShift is GroupNorm followed by the FiLM-like conditioning
// of guided-diffusion's ResBlock with use_scale_shift_norm (Dhariwal &
// Nichol 2021, Sec. 3, "adaptive group normalization"): with z the
// GroupNorm output before any activation,
//
//	z' = z * (1 + ss[n, c]) + ss[n, C + c],   y = z' or silu(z') when d.SiLU,
//
// where ss (N, 2C) holds the scale then the shift of each example (the
// two halves of th.chunk(emb_out, 2, dim=1)). mean and rstd (N*Groups)
// receive the statistics as in GroupNorm; gamma and beta may be nil (1
// and 0). Statistics are accumulated in float64 in two passes.
func (c *CPU) GroupNormScaleShift(y, mean, rstd, x, gamma, beta, ss []float32, d GroupNormDims) {
	const op = "GroupNormScaleShift"
	if !c.checkGN(op, d) {
		return
	}
	total, ng := d.N*d.C*d.HW, d.N*d.Groups
	if !c.has(op, "y", y, total) || !c.has(op, "x", x, total) || !c.has(op, "mean", mean, ng) ||
		!c.has(op, "rstd", rstd, ng) || !c.opt(op, "gamma", gamma, d.C) || !c.opt(op, "beta", beta, d.C) ||
		!c.has(op, "ss", ss, 2*d.N*d.C) {
		return
	}
	cg := d.C / d.Groups
	cnt := cg * d.HW
	c.parallel(ng, max(1, elemGrain/cnt), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			xs := x[i*cnt : (i+1)*cnt]
			mu, rs := groupStats(xs, nil, d.HW, d.Eps)
			mean[i], rstd[i] = float32(mu), float32(rs)
			n, g0 := i/d.Groups, (i%d.Groups)*cg
			for j := 0; j < cg; j++ {
				ch := g0 + j
				ga, be := affineAt(gamma, beta, ss, n, ch, d.C)
				a := float32(rs) * ga
				bb := be - float32(mu)*a
				affineRow(y[i*cnt+j*d.HW:i*cnt+(j+1)*d.HW], xs[j*d.HW:(j+1)*d.HW], a, bb, d.SiLU)
			}
		}
	})
}

// affineAt returns the effective scale and shift of channel ch of
// example n after the FiLM step: gamma*(1+s) and beta*(1+s) + shift.
func affineAt(gamma, beta, ss []float32, n, ch, nc int) (float32, float32) {
	ga, be := float32(1), float32(0)
	if gamma != nil {
		ga = gamma[ch]
	}
	if beta != nil {
		be = beta[ch]
	}
	s1 := 1 + ss[n*2*nc+ch]
	return ga * s1, be*s1 + ss[n*2*nc+nc+ch]
}

// GroupNormScaleShiftBackward computes dx, dgamma, dbeta and dss of
// GroupNormScaleShift given dy and the saved mean and rstd. With xhat =
// (x - mu) rstd, u = xhat*gamma + beta, z' = u*(1+s) + shift and dz =
// dL/dz' (through the SiLU when d.SiLU):
//
//	dss[n, C+c] = sum_p dz;  dss[n, c] = sum_p dz * u
//	dbeta[c] = sum_n (1+s) sum_p dz;  dgamma[c] = sum_n (1+s) sum_p dz*xhat
//	dx = rstd (g - mean_group(g) - xhat mean_group(g xhat)),  g = dz gamma (1+s)
//
// dgamma, dbeta and dss may be nil to skip them; dx serves as scratch for
// dz, so it must not alias any input.
func (c *CPU) GroupNormScaleShiftBackward(dx, dgamma, dbeta, dss, dy, x, mean, rstd, gamma, beta, ss []float32, d GroupNormDims) {
	const op = "GroupNormScaleShiftBackward"
	if !c.checkGN(op, d) {
		return
	}
	total, ng := d.N*d.C*d.HW, d.N*d.Groups
	if !c.has(op, "dx", dx, total) || !c.has(op, "dy", dy, total) || !c.has(op, "x", x, total) ||
		!c.has(op, "mean", mean, ng) || !c.has(op, "rstd", rstd, ng) || !c.opt(op, "gamma", gamma, d.C) ||
		!c.opt(op, "beta", beta, d.C) || !c.has(op, "ss", ss, 2*d.N*d.C) || !c.opt(op, "dgamma", dgamma, d.C) ||
		!c.opt(op, "dbeta", dbeta, d.C) || !c.opt(op, "dss", dss, 2*d.N*d.C) {
		return
	}
	cg := d.C / d.Groups
	cnt := cg * d.HW
	// sums[(n*C+c)*2+{0,1}] = per-(n, c) sum of dz and of dz*xhat.
	sums := c.ws.get(2 * d.N * d.C)
	defer c.ws.put(sums)
	c.parallel(ng, max(1, elemGrain/cnt), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			mu, rs := mean[i], rstd[i]
			n, g0 := i/d.Groups, (i%d.Groups)*cg
			var m1, m2 float64 // sums of g and g*xhat over the group
			for j := 0; j < cg; j++ {
				ch := g0 + j
				ga, be := affineAt(gamma, beta, ss, n, ch, d.C)
				off := i*cnt + j*d.HW
				xr, gr, dr := x[off:off+d.HW], dy[off:off+d.HW], dx[off:off+d.HW]
				var sdz, sdzx float32
				if d.SiLU {
					sdz, sdzx = siluBwd(dr, xr, gr, mu, rs, ga, be)
				} else {
					for p, v := range xr {
						dz := gr[p]
						dr[p] = dz
						sdz += dz
						sdzx += dz * (v - mu) * rs
					}
				}
				sums[(n*d.C+ch)*2] = sdz
				sums[(n*d.C+ch)*2+1] = sdzx
				m1 += float64(ga) * float64(sdz)
				m2 += float64(ga) * float64(sdzx)
			}
			a1 := float32(m1 / float64(cnt))
			a2 := float32(m2 / float64(cnt))
			for j := 0; j < cg; j++ {
				ga, _ := affineAt(gamma, beta, ss, n, g0+j, d.C)
				off := i*cnt + j*d.HW
				// dx = rs*(dz*ga - a1 - (x-mu)*rs*a2), as a*dz + b*x + c.
				axbyc(dx[off:off+d.HW], x[off:off+d.HW], rs*ga, -rs*rs*a2, rs*rs*a2*mu-rs*a1)
			}
		}
	})
	for ch := 0; ch < d.C; ch++ {
		ga, be := float32(1), float32(0)
		if gamma != nil {
			ga = gamma[ch]
		}
		if beta != nil {
			be = beta[ch]
		}
		var sb, sg float32
		for n := 0; n < d.N; n++ {
			sdz, sdzx := sums[(n*d.C+ch)*2], sums[(n*d.C+ch)*2+1]
			s1 := 1 + ss[n*2*d.C+ch]
			sb += s1 * sdz
			sg += s1 * sdzx
			if dss != nil {
				dss[n*2*d.C+ch] = ga*sdzx + be*sdz
				dss[n*2*d.C+d.C+ch] = sdz
			}
		}
		if dbeta != nil {
			dbeta[ch] = sb
		}
		if dgamma != nil {
			dgamma[ch] = sg
		}
	}
}

// AvgPool2x is 2x2 average pooling with stride 2 (PyTorch's
// AvgPool2d(kernel_size=2, stride=2), guided-diffusion's Downsample with
// use_conv=False): y[n,c,i,j] = (x[n,c,2i,2j] + x[n,c,2i,2j+1] +
// x[n,c,2i+1,2j] + x[n,c,2i+1,2j+1]) / 4 with x (N, C, 2H, 2W) and
// y (N, C, H, W); h and w are y's.
func (c *CPU) AvgPool2x(y, x []float32, n, ch, h, w int) {
	const op = "AvgPool2x"
	if !c.sizes(op, n, ch, h, w) || !c.has(op, "y", y, n*ch*h*w) || !c.has(op, "x", x, n*ch*4*h*w) {
		return
	}
	w2 := 2 * w
	c.parallel(n*ch, elemGrain/(h*w)+1, func(_, lo, hi int) {
		for p := lo; p < hi; p++ {
			xp := x[p*4*h*w : (p+1)*4*h*w]
			yp := y[p*h*w : (p+1)*h*w]
			for i := 0; i < h; i++ {
				r0 := xp[2*i*w2 : (2*i+1)*w2]
				r1 := xp[(2*i+1)*w2 : (2*i+2)*w2]
				out := yp[i*w : (i+1)*w]
				for j := range out {
					out[j] = ((r0[2*j] + r0[2*j+1]) + (r1[2*j] + r1[2*j+1])) * 0.25
				}
			}
		}
	})
}

// AvgPool2xBackward sets dx[n,c,2i+a,2j+b] = dy[n,c,i,j] / 4 for a, b in
// {0, 1}; dy (N, C, H, W), dx (N, C, 2H, 2W).
func (c *CPU) AvgPool2xBackward(dx, dy []float32, n, ch, h, w int) {
	const op = "AvgPool2xBackward"
	if !c.sizes(op, n, ch, h, w) || !c.has(op, "dx", dx, n*ch*4*h*w) || !c.has(op, "dy", dy, n*ch*h*w) {
		return
	}
	w2 := 2 * w
	c.parallel(n*ch, elemGrain/(h*w)+1, func(_, lo, hi int) {
		for p := lo; p < hi; p++ {
			dyp := dy[p*h*w : (p+1)*h*w]
			dxp := dx[p*4*h*w : (p+1)*4*h*w]
			for i := 0; i < h; i++ {
				row := dxp[2*i*w2 : (2*i+1)*w2]
				for j, v := range dyp[i*w : (i+1)*w] {
					row[2*j] = v * 0.25
					row[2*j+1] = v * 0.25
				}
				copy(dxp[(2*i+1)*w2:(2*i+2)*w2], row)
			}
		}
	})
}

// QKVAttention computes guided-diffusion's QKVAttention (or, with
// d.Legacy, QKVAttentionLegacy) on qkv (B, 3*Heads*HeadDim, T) into
// o (B, Heads*HeadDim, T): per batch item and head, with q, k, v the
// head's (HeadDim, T) blocks (see QKVAttnDims),
//
//	P = softmax_s(Scale * q[:, t] . k[:, s]),  o[:, t] = sum_s P[t, s] v[:, s],
//
// softmax in float32 over keys s. Each (item, head) pair is two GEMMs
// around a row softmax of its (T, T) scores, the pairs split over the
// threads. o must not alias qkv.
func (c *CPU) QKVAttention(o, qkv []float32, d QKVAttnDims) {
	const op = "QKVAttention"
	if !c.checkQKV(op, d) {
		return
	}
	n := d.B * d.Heads * d.HeadDim * d.T
	if !c.has(op, "o", o, n) || !c.has(op, "qkv", qkv, 3*n) {
		return
	}
	pairs := d.B * d.Heads
	serial := pairs < c.threads
	c.images(pairs, serial, func(_, lo, hi int) {
		p := c.ws.get(d.T * d.T)
		defer c.ws.put(p)
		for i := lo; i < hi; i++ {
			qo, ko, vo, oo := d.offsets(i/d.Heads, i%d.Heads)
			c.qkvScores(serial, p, qkv[qo:], qkv[ko:], d)
			// o (D, T) = v (D, T) P^T.
			c.mm(serial, false, true, d.HeadDim, d.T, d.T, 1, qkv[vo:], d.T, p, d.T, 0, o[oo:], d.T)
		}
	})
}

// qkvScores sets p (T, T) = softmax_rows(Scale q^T k) for one head's
// channel-major q and k (HeadDim, T).
func (c *CPU) qkvScores(par bool, p, q, k []float32, d QKVAttnDims) {
	c.mm(par, true, false, d.T, d.T, d.HeadDim, d.Scale, q, d.T, k, d.T, 0, p, d.T)
	for t := 0; t < d.T; t++ {
		softmaxRow(p[t*d.T : (t+1)*d.T])
	}
}

// QKVAttentionBackward computes dqkv (B, 3*Heads*HeadDim, T, the same
// layout as qkv) of QKVAttention given do, recomputing P per item and
// head:
//
//	dv = do P;  dP = do^T v;  dS = P * (dP - rowsum(P * dP))
//	dq = Scale k dS^T;  dk = Scale q dS
//
// dqkv must not alias an input.
func (c *CPU) QKVAttentionBackward(dqkv, do, qkv []float32, d QKVAttnDims) {
	const op = "QKVAttentionBackward"
	if !c.checkQKV(op, d) {
		return
	}
	n := d.B * d.Heads * d.HeadDim * d.T
	if !c.has(op, "dqkv", dqkv, 3*n) || !c.has(op, "do", do, n) || !c.has(op, "qkv", qkv, 3*n) {
		return
	}
	pairs := d.B * d.Heads
	serial := pairs < c.threads
	T, D := d.T, d.HeadDim
	c.images(pairs, serial, func(_, lo, hi int) {
		buf := c.ws.get(2 * T * T)
		defer c.ws.put(buf)
		p, dp := buf[:T*T], buf[T*T:]
		for i := lo; i < hi; i++ {
			qo, ko, vo, oo := d.offsets(i/d.Heads, i%d.Heads)
			c.qkvScores(serial, p, qkv[qo:], qkv[ko:], d)
			c.mm(serial, false, false, D, T, T, 1, do[oo:], T, p, T, 0, dqkv[vo:], T)
			c.mm(serial, true, false, T, T, D, 1, do[oo:], T, qkv[vo:], T, 0, dp, T)
			for t := 0; t < T; t++ {
				pr, gr := p[t*T:(t+1)*T], dp[t*T:(t+1)*T]
				var dot float32
				for j, pv := range pr {
					dot += pv * gr[j]
				}
				for j, pv := range pr {
					gr[j] = pv * (gr[j] - dot)
				}
			}
			c.mm(serial, false, true, D, T, T, d.Scale, qkv[ko:], T, dp, T, 0, dqkv[qo:], T)
			c.mm(serial, false, false, D, T, T, d.Scale, qkv[qo:], T, dp, T, 0, dqkv[ko:], T)
		}
	})
}

// AttnPoolTokens builds the tokens of guided-diffusion's AttentionPool2d
// (the classifier head, adapted from CLIP): the spatial mean of x as a
// first token, then the HW positions, plus the positional embedding:
//
//	y[n,c,0] = mean_p x[n,c,p] + pos[c,0];  y[n,c,1+p] = x[n,c,p] + pos[c,1+p]
//
// x (N, C, HW), pos (C, HW+1), y (N, C, HW+1). The mean is accumulated
// in float64.
func (c *CPU) AttnPoolTokens(y, x, pos []float32, n, ch, hw int) {
	const op = "AttnPoolTokens"
	t := hw + 1
	if !c.sizes(op, n, ch, hw) || !c.has(op, "y", y, n*ch*t) || !c.has(op, "x", x, n*ch*hw) || !c.has(op, "pos", pos, ch*t) {
		return
	}
	c.parallel(n*ch, elemGrain/t+1, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, yr, pr := x[r*hw:(r+1)*hw], y[r*t:(r+1)*t], pos[(r%ch)*t:(r%ch+1)*t]
			yr[0] = float32(blockSum(xr)/float64(hw)) + pr[0]
			for p, v := range xr {
				yr[1+p] = v + pr[1+p]
			}
		}
	})
}

// AttnPoolTokensBackward sets dx[n,c,p] = dy[n,c,1+p] + dy[n,c,0]/HW and,
// when dpos is not nil, dpos[c,t] = sum_n dy[n,c,t].
func (c *CPU) AttnPoolTokensBackward(dx, dpos, dy []float32, n, ch, hw int) {
	const op = "AttnPoolTokensBackward"
	t := hw + 1
	if !c.sizes(op, n, ch, hw) || !c.has(op, "dx", dx, n*ch*hw) || !c.opt(op, "dpos", dpos, ch*t) || !c.has(op, "dy", dy, n*ch*t) {
		return
	}
	inv := 1 / float32(hw)
	c.parallel(n*ch, elemGrain/t+1, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			dyr, dxr := dy[r*t:(r+1)*t], dx[r*hw:(r+1)*hw]
			m := dyr[0] * inv
			for p := range dxr {
				dxr[p] = dyr[1+p] + m
			}
		}
	})
	if dpos == nil {
		return
	}
	copy(dpos[:ch*t], dy[:ch*t])
	for b := 1; b < n; b++ {
		for i, v := range dy[b*ch*t : (b+1)*ch*t] {
			dpos[i] += v
		}
	}
}

// ChannelMean sets y[n,c] = mean_p x[n,c,p] over the hw positions (the
// spatial mean: PyTorch's AdaptiveAvgPool2d((1, 1)), and h.mean(dim=(2,
// 3)) of the spatial classifier pools), accumulated in float64.
func (c *CPU) ChannelMean(y, x []float32, n, ch, hw int) {
	const op = "ChannelMean"
	if !c.sizes(op, n, ch, hw) || !c.has(op, "y", y, n*ch) || !c.has(op, "x", x, n*ch*hw) {
		return
	}
	for i := 0; i < n*ch; i++ {
		y[i] = float32(blockSum(x[i*hw:(i+1)*hw]) / float64(hw))
	}
}

// ChannelMeanBackward sets dx[n,c,p] = dy[n,c] / hw.
func (c *CPU) ChannelMeanBackward(dx, dy []float32, n, ch, hw int) {
	const op = "ChannelMeanBackward"
	if !c.sizes(op, n, ch, hw) || !c.has(op, "dx", dx, n*ch*hw) || !c.has(op, "dy", dy, n*ch) {
		return
	}
	inv := 1 / float32(hw)
	c.parallel(n*ch, elemGrain/hw+1, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			v := dy[i] * inv
			fill(dx[i*hw:(i+1)*hw], v)
		}
	})
}

// ReLU sets y = max(x, 0) for n values (y may alias x); NaN stays NaN.
func (c *CPU) ReLU(y, x []float32, n int) {
	if !c.has("ReLU", "y", y, n) || !c.has("ReLU", "x", x, n) {
		return
	}
	c.parallel(n, elemGrain, func(_, lo, hi int) {
		for i, v := range x[lo:hi] {
			if v < 0 {
				v = 0
			}
			y[lo+i] = v
		}
	})
}

// ReLUBackward sets dx = dy where x > 0, else 0 (dx may alias dy).
func (c *CPU) ReLUBackward(dx, dy, x []float32, n int) {
	if !c.has("ReLUBackward", "dx", dx, n) || !c.has("ReLUBackward", "dy", dy, n) || !c.has("ReLUBackward", "x", x, n) {
		return
	}
	c.parallel(n, elemGrain, func(_, lo, hi int) {
		for i, v := range x[lo:hi] {
			g := dy[lo+i]
			if !(v > 0) {
				g = 0
			}
			dx[lo+i] = g
		}
	})
}
