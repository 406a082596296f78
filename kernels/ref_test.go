package kernels

import "math"

// The reference twins: obviously correct, slow loops in float64 over the
// same layouts as CPU, each with its formula. Tests compare CPU against
// them, and finite differences of the forward twins against CPU backwards.

// refConv: y[n,k,oh,ow] = b[k] + sum_{c,r,s} w[k,c,r,s] x[n,c,oh*sh-pt+r,ow*sw-pl+s].
func refConv(x, w, b []float64, d ConvDims) []float64 {
	oh, ow := d.OutH(), d.OutW()
	y := make([]float64, d.N*d.K*oh*ow)
	for n := 0; n < d.N; n++ {
		for k := 0; k < d.K; k++ {
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					s := 0.0
					if b != nil {
						s = b[k]
					}
					for c := 0; c < d.C; c++ {
						for r := 0; r < d.R; r++ {
							for q := 0; q < d.S; q++ {
								ih, iw := i*d.StrideH-d.PadTop+r, j*d.StrideW-d.PadLeft+q
								if ih < 0 || ih >= d.H || iw < 0 || iw >= d.W {
									continue
								}
								s += w[((k*d.C+c)*d.R+r)*d.S+q] * x[((n*d.C+c)*d.H+ih)*d.W+iw]
							}
						}
					}
					y[((n*d.K+k)*oh+i)*ow+j] = s
				}
			}
		}
	}
	return y
}

// refConvBack: dx[n,c,ih,iw] = sum over (k,r,s,oh,ow) reading (ih,iw) of
// w[k,c,r,s] dy[n,k,oh,ow]; dw[k,c,r,s] = sum_{n,oh,ow} dy x; db[k] = sum dy.
func refConvBack(dy, x, w []float64, d ConvDims) (dx, dw, db []float64) {
	oh, ow := d.OutH(), d.OutW()
	dx = make([]float64, d.N*d.C*d.H*d.W)
	dw = make([]float64, d.K*d.C*d.R*d.S)
	db = make([]float64, d.K)
	for n := 0; n < d.N; n++ {
		for k := 0; k < d.K; k++ {
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					g := dy[((n*d.K+k)*oh+i)*ow+j]
					db[k] += g
					for c := 0; c < d.C; c++ {
						for r := 0; r < d.R; r++ {
							for q := 0; q < d.S; q++ {
								ih, iw := i*d.StrideH-d.PadTop+r, j*d.StrideW-d.PadLeft+q
								if ih < 0 || ih >= d.H || iw < 0 || iw >= d.W {
									continue
								}
								xi := ((n*d.C+c)*d.H+ih)*d.W + iw
								wi := ((k*d.C+c)*d.R+r)*d.S + q
								dx[xi] += w[wi] * g
								dw[wi] += x[xi] * g
							}
						}
					}
				}
			}
		}
	}
	return dx, dw, db
}

// refLinear: y[m,o] = b[o] + sum_i x[m,i] w[o,i].
func refLinear(x, w, b []float64, m, in, out int) []float64 {
	y := make([]float64, m*out)
	for r := 0; r < m; r++ {
		for o := 0; o < out; o++ {
			s := 0.0
			if b != nil {
				s = b[o]
			}
			for i := 0; i < in; i++ {
				s += x[r*in+i] * w[o*in+i]
			}
			y[r*out+o] = s
		}
	}
	return y
}

// refLinearBack: dx = dy w, dw = dy^T x, db = sum_m dy.
func refLinearBack(dy, x, w []float64, m, in, out int) (dx, dw, db []float64) {
	dx, dw, db = make([]float64, m*in), make([]float64, out*in), make([]float64, out)
	for r := 0; r < m; r++ {
		for o := 0; o < out; o++ {
			g := dy[r*out+o]
			db[o] += g
			for i := 0; i < in; i++ {
				dx[r*in+i] += g * w[o*in+i]
				dw[o*in+i] += g * x[r*in+i]
			}
		}
	}
	return dx, dw, db
}

func sig64(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// refGroupNorm: per (n, g): mu, var over the group; z = (x-mu)/sqrt(var+eps)
// * gamma + beta; y = z or z*sigmoid(z).
func refGroupNorm(x, gamma, beta []float64, d GroupNormDims) (y, mean, rstd []float64) {
	cg := d.C / d.Groups
	cnt := cg * d.HW
	y = make([]float64, len(x))
	mean, rstd = make([]float64, d.N*d.Groups), make([]float64, d.N*d.Groups)
	for i := 0; i < d.N*d.Groups; i++ {
		mu, vr := 0.0, 0.0
		for _, v := range x[i*cnt : (i+1)*cnt] {
			mu += v
		}
		mu /= float64(cnt)
		for _, v := range x[i*cnt : (i+1)*cnt] {
			vr += (v - mu) * (v - mu)
		}
		vr /= float64(cnt)
		rs := 1 / math.Sqrt(vr+float64(d.Eps))
		mean[i], rstd[i] = mu, rs
		for j := 0; j < cnt; j++ {
			ch := (i%d.Groups)*cg + j/d.HW
			z := (x[i*cnt+j]-mu)*rs*gamma[ch] + beta[ch]
			if d.SiLU {
				z *= sig64(z)
			}
			y[i*cnt+j] = z
		}
	}
	return y, mean, rstd
}

// refGroupNormBack: the textbook backward of refGroupNorm (see
// GroupNormBackward's doc), in float64 with its own statistics.
func refGroupNormBack(dy, x, gamma, beta []float64, d GroupNormDims) (dx, dgamma, dbeta []float64) {
	_, mean, rstd := refGroupNorm(x, gamma, beta, d)
	cg := d.C / d.Groups
	cnt := cg * d.HW
	dx, dgamma, dbeta = make([]float64, len(x)), make([]float64, d.C), make([]float64, d.C)
	for i := 0; i < d.N*d.Groups; i++ {
		g := make([]float64, cnt)
		xh := make([]float64, cnt)
		m1, m2 := 0.0, 0.0
		for j := 0; j < cnt; j++ {
			ch := (i%d.Groups)*cg + j/d.HW
			xh[j] = (x[i*cnt+j] - mean[i]) * rstd[i]
			dz := dy[i*cnt+j]
			if d.SiLU {
				z := xh[j]*gamma[ch] + beta[ch]
				s := sig64(z)
				dz *= s * (1 + z*(1-s))
			}
			dbeta[ch] += dz
			dgamma[ch] += dz * xh[j]
			g[j] = dz * gamma[ch]
			m1 += g[j]
			m2 += g[j] * xh[j]
		}
		m1 /= float64(cnt)
		m2 /= float64(cnt)
		for j := 0; j < cnt; j++ {
			dx[i*cnt+j] = rstd[i] * (g[j] - m1 - xh[j]*m2)
		}
	}
	return dx, dgamma, dbeta
}

// refAttention: o[b,t,h,:] = sum_u P[t,u] v[b,u,h,:],
// P[t,:] = softmax_u(scale * q[b,t,h,:] . k[b,u,h,:]).
func refAttention(q, k, v []float64, d AttnDims) []float64 {
	hd := d.Heads * d.HeadDim
	o := make([]float64, len(q))
	for b := 0; b < d.B; b++ {
		for h := 0; h < d.Heads; h++ {
			for t := 0; t < d.T; t++ {
				p := refProbs(q, k, d, b, h, t)
				for u := 0; u < d.T; u++ {
					for e := 0; e < d.HeadDim; e++ {
						o[(b*d.T+t)*hd+h*d.HeadDim+e] += p[u] * v[(b*d.T+u)*hd+h*d.HeadDim+e]
					}
				}
			}
		}
	}
	return o
}

func refProbs(q, k []float64, d AttnDims, b, h, t int) []float64 {
	hd := d.Heads * d.HeadDim
	p := make([]float64, d.T)
	m := math.Inf(-1)
	for u := range p {
		s := 0.0
		for e := 0; e < d.HeadDim; e++ {
			s += q[(b*d.T+t)*hd+h*d.HeadDim+e] * k[(b*d.T+u)*hd+h*d.HeadDim+e]
		}
		p[u] = s * float64(d.Scale)
		m = math.Max(m, p[u])
	}
	z := 0.0
	for u := range p {
		p[u] = math.Exp(p[u] - m)
		z += p[u]
	}
	for u := range p {
		p[u] /= z
	}
	return p
}

// refAttentionBack: dv = P^T do, dP = do v^T, dS = P*(dP - rowsum(P*dP)),
// dq = scale dS k, dk = scale dS^T q, per (b, h).
func refAttentionBack(do, q, k, v []float64, d AttnDims) (dq, dk, dv []float64) {
	hd := d.Heads * d.HeadDim
	dq, dk, dv = make([]float64, len(q)), make([]float64, len(q)), make([]float64, len(q))
	idx := func(b, t, h, e int) int { return (b*d.T+t)*hd + h*d.HeadDim + e }
	for b := 0; b < d.B; b++ {
		for h := 0; h < d.Heads; h++ {
			for t := 0; t < d.T; t++ {
				p := refProbs(q, k, d, b, h, t)
				dp := make([]float64, d.T)
				dot := 0.0
				for u := 0; u < d.T; u++ {
					for e := 0; e < d.HeadDim; e++ {
						dv[idx(b, u, h, e)] += p[u] * do[idx(b, t, h, e)]
						dp[u] += do[idx(b, t, h, e)] * v[idx(b, u, h, e)]
					}
					dot += p[u] * dp[u]
				}
				for u := 0; u < d.T; u++ {
					ds := p[u] * (dp[u] - dot) * float64(d.Scale)
					for e := 0; e < d.HeadDim; e++ {
						dq[idx(b, t, h, e)] += ds * k[idx(b, u, h, e)]
						dk[idx(b, u, h, e)] += ds * q[idx(b, t, h, e)]
					}
				}
			}
		}
	}
	return dq, dk, dv
}
