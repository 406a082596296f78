package kernels

func (c *CPU) checkGN(op string, d GroupNormDims) bool {
	if d.N < 1 || d.C < 1 || d.HW < 1 || d.Groups < 1 || d.C%d.Groups != 0 {
		c.fail("%s: dims %+v: N, C, HW, Groups must be >= 1 and Groups must divide C", op, d)
		return false
	}
	if !(d.Eps >= 0) {
		c.fail("%s: Eps = %v: must be >= 0", op, d.Eps)
		return false
	}
	return true
}

// GroupNorm normalises each (n, group) of C/Groups channels (Wu & He 2018):
// with mu and var the mean and biased variance of the group's
// (C/Groups)*HW values, z = (x - mu) / sqrt(var + Eps) * gamma[c] + beta[c],
// and y = z, or y = z * sigmoid(z) when d.SiLU (the fused activation).
// mean and rstd (N*Groups) receive mu and 1/sqrt(var + Eps). gamma and beta
// may be nil (1 and 0). Statistics are accumulated in float64 in two passes;
// the (n, group) pairs are split over the threads.
func (c *CPU) GroupNorm(y, mean, rstd, x, gamma, beta []float32, d GroupNormDims) {
	const op = "GroupNorm"
	if !c.checkGN(op, d) {
		return
	}
	total, ng := d.N*d.C*d.HW, d.N*d.Groups
	if !c.has(op, "y", y, total) || !c.has(op, "x", x, total) || !c.has(op, "mean", mean, ng) ||
		!c.has(op, "rstd", rstd, ng) || !c.opt(op, "gamma", gamma, d.C) || !c.opt(op, "beta", beta, d.C) {
		return
	}
	c.groupNorm(y, mean, rstd, x, nil, gamma, beta, d)
}

// GroupNormBackward computes dx, dgamma and dbeta of GroupNorm given dy and
// the saved mean and rstd. With xhat = (x - mu) * rstd, z = xhat*gamma +
// beta and dz = dy (or dy * s * (1 + z*(1-s)), s = sigmoid(z), with SiLU):
//
//	dbeta[c]  = sum_{n,p} dz
//	dgamma[c] = sum_{n,p} dz * xhat
//	dx        = rstd * (g - mean_group(g) - xhat * mean_group(g * xhat)), g = dz*gamma
//
// dgamma and dbeta may be nil to skip them; gamma and beta may be nil (1
// and 0) as in GroupNorm. dx serves as scratch for dz, so it must not alias
// any input.
func (c *CPU) GroupNormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta []float32, d GroupNormDims) {
	const op = "GroupNormBackward"
	if !c.checkGN(op, d) {
		return
	}
	total, ng := d.N*d.C*d.HW, d.N*d.Groups
	if !c.has(op, "dx", dx, total) || !c.has(op, "dy", dy, total) || !c.has(op, "x", x, total) ||
		!c.has(op, "mean", mean, ng) || !c.has(op, "rstd", rstd, ng) || !c.opt(op, "gamma", gamma, d.C) ||
		!c.opt(op, "beta", beta, d.C) || !c.opt(op, "dgamma", dgamma, d.C) || !c.opt(op, "dbeta", dbeta, d.C) {
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
			g0 := (i % d.Groups) * cg
			n := i / d.Groups
			var m1, m2 float64 // sums of g and g*xhat over the group
			for j := 0; j < cg; j++ {
				ch := g0 + j
				ga, be := float32(1), float32(0)
				if gamma != nil {
					ga = gamma[ch]
				}
				if beta != nil {
					be = beta[ch]
				}
				off := i*cnt + j*d.HW
				xr, gr, dr := x[off:off+d.HW], dy[off:off+d.HW], dx[off:off+d.HW]
				var sdz, sdzx float32
				if d.SiLU {
					sdz, sdzx = siluBwd(dr, xr, gr, mu, rs, ga, be)
				} else {
					for p, v := range xr {
						xh := (v - mu) * rs
						dz := gr[p]
						dr[p] = dz
						sdz += dz
						sdzx += dz * xh
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
				ch := g0 + j
				ga := float32(1)
				if gamma != nil {
					ga = gamma[ch]
				}
				off := i*cnt + j*d.HW
				// dx = rs*(dz*ga - a1 - (x-mu)*rs*a2), as a*dz + b*x + c.
				axbyc(dx[off:off+d.HW], x[off:off+d.HW], rs*ga, -rs*rs*a2, rs*rs*a2*mu-rs*a1)
			}
		}
	})
	for ch := 0; ch < d.C; ch++ {
		var sb, sg float32
		for n := 0; n < d.N; n++ {
			sb += sums[(n*d.C+ch)*2]
			sg += sums[(n*d.C+ch)*2+1]
		}
		if dbeta != nil {
			dbeta[ch] = sb
		}
		if dgamma != nil {
			dgamma[ch] = sg
		}
	}
}

// statBlock is how many values blockSum adds in float32 before carrying
// into float64: float32 error over 256 terms stays near 1e-5 relative of
// the block sum, and float64 carries the blocks.
const statBlock = 256

// blockSum returns sum_i x[i], in float32 blocks carried in float64.
func blockSum(x []float32) float64 {
	var s float64
	for len(x) > 0 {
		b := x[:min(statBlock, len(x))]
		s += float64(sumVec(b))
		x = x[len(b):]
	}
	return s
}

// blockSqDev returns sum_i (x[i] - mu)^2 (the second pass of a two-pass
// variance), in float32 blocks carried in float64.
func blockSqDev(x []float32, mu float32) float64 {
	var s float64
	for len(x) > 0 {
		b := x[:min(statBlock, len(x))]
		s += float64(sqDevVec(b, mu))
		x = x[len(b):]
	}
	return s
}
