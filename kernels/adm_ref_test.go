package kernels

import "math"

// Reference twins of the ADM kernels (adm.go): plain float64 loops over
// the same layouts, each with its formula.

// refGroupNormSS: z = (x-mu)/sqrt(var+eps)*gamma + beta per (n, group),
// z' = z*(1+ss[n,c]) + ss[n,C+c], y = z' or z'*sigmoid(z').
func refGroupNormSS(x, gamma, beta, ss []float64, d GroupNormDims) []float64 {
	plain := d
	plain.SiLU = false
	z, _, _ := refGroupNorm(x, gamma, beta, plain)
	y := make([]float64, len(z))
	for i, v := range z {
		n, ch := i/(d.C*d.HW), (i/d.HW)%d.C
		v = v*(1+ss[n*2*d.C+ch]) + ss[n*2*d.C+d.C+ch]
		if d.SiLU {
			v *= sig64(v)
		}
		y[i] = v
	}
	return y
}

// refAvgPool2x: y[n,c,i,j] = mean of x's 2x2 block at (2i, 2j); h, w are y's.
func refAvgPool2x(x []float64, n, c, h, w int) []float64 {
	y := make([]float64, n*c*h*w)
	for p := 0; p < n*c; p++ {
		for i := 0; i < h; i++ {
			for j := 0; j < w; j++ {
				s := 0.0
				for a := 0; a < 2; a++ {
					for b := 0; b < 2; b++ {
						s += x[(p*2*h+2*i+a)*2*w+2*j+b]
					}
				}
				y[(p*h+i)*w+j] = s / 4
			}
		}
	}
	return y
}

// refQKVAttention: per item b and head h, with q, k, v the head's
// (D, T) channel blocks in d's order, o[:, t] = sum_s P[t,s] v[:, s],
// P[t,:] = softmax_s(scale q[:, t] . k[:, s]).
func refQKVAttention(qkv []float64, d QKVAttnDims) []float64 {
	D, T := d.HeadDim, d.T
	o := make([]float64, d.B*d.Heads*D*T)
	for b := 0; b < d.B; b++ {
		for h := 0; h < d.Heads; h++ {
			qo, ko, vo, oo := refOffsets(d, b, h)
			for t := 0; t < T; t++ {
				p := make([]float64, T)
				m := math.Inf(-1)
				for s := 0; s < T; s++ {
					for c := 0; c < D; c++ {
						p[s] += qkv[qo+c*T+t] * qkv[ko+c*T+s]
					}
					p[s] *= float64(d.Scale)
					m = math.Max(m, p[s])
				}
				z := 0.0
				for s := range p {
					p[s] = math.Exp(p[s] - m)
					z += p[s]
				}
				for c := 0; c < D; c++ {
					acc := 0.0
					for s := 0; s < T; s++ {
						acc += p[s] / z * qkv[vo+c*T+s]
					}
					o[oo+c*T+t] = acc
				}
			}
		}
	}
	return o
}

// refOffsets spells out guided-diffusion's two head orders: QKVAttention
// chunks qkv into q, k, v (each (B, H*D, T)) and then heads;
// QKVAttentionLegacy reshapes to (B*H, 3*D, T) and then splits q, k, v.
func refOffsets(d QKVAttnDims, b, h int) (q, k, v, o int) {
	D, T, C := d.HeadDim, d.T, d.Heads*d.HeadDim
	o = (b*C + h*D) * T
	if d.Legacy {
		base := (b*d.Heads + h) * 3 * D * T
		return base, base + D*T, base + 2*D*T, o
	}
	base := b * 3 * C * T
	return base + h*D*T, base + C*T + h*D*T, base + 2*C*T + h*D*T, o
}

// refAttnPoolTokens: y[n,c,0] = mean_p x[n,c,p] + pos[c,0],
// y[n,c,1+p] = x[n,c,p] + pos[c,1+p].
func refAttnPoolTokens(x, pos []float64, n, c, hw int) []float64 {
	t := hw + 1
	y := make([]float64, n*c*t)
	for r := 0; r < n*c; r++ {
		m := 0.0
		for p := 0; p < hw; p++ {
			m += x[r*hw+p]
			y[r*t+1+p] = x[r*hw+p] + pos[(r%c)*t+1+p]
		}
		y[r*t] = m/float64(hw) + pos[(r%c)*t]
	}
	return y
}

// refChannelMean: y[n,c] = mean_p x[n,c,p].
func refChannelMean(x []float64, n, c, hw int) []float64 {
	y := make([]float64, n*c)
	for r := range y {
		for p := 0; p < hw; p++ {
			y[r] += x[r*hw+p]
		}
		y[r] /= float64(hw)
	}
	return y
}

// refReLU: y = max(x, 0).
func refReLU(x []float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = math.Max(v, 0)
	}
	return y
}
