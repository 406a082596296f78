package diffusion

import (
	"math"
	"slices"
)

// unipcSched ports diffusers v0.21.4's UniPCMultistepScheduler (Zhao et
// al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast
// Sampling of Diffusion Models"): the multistep predictor UniP-p
// (Algorithm 2) and, before each new predictor step, the corrector UniC
// (Algorithm 1) that reuses the model output at the new point, with B(h)
// = h (bh1) or e^h - 1 (bh2), on the data prediction (predict_x0) or the
// noise prediction. The corrector is skipped after the step indices in
// disable_corrector.
type unipcSched struct {
	vpMultistep
	pts       []vpPoint // diffusers' timestep_list, as points (oldest first)
	last      []float64 // the sample the last predictor started from
	thisOrder int
}

func newUniPC(c *SchedulerConfig, tab *trainTables, n int) *unipcSched {
	s := &unipcSched{}
	s.init(c, tab, vpTimesteps(c, tab, c.NumTrainTimesteps, n, c.TimestepSpacing))
	s.zeroFinal = c.FinalSigmasType == "zero"
	s.pts = make([]vpPoint, c.SolverOrder)
	return s
}

func (s *unipcSched) Step(out, x Batch, i int, draw func(Batch)) (Batch, error) {
	mo, _, err := s.begin(out, x, i)
	if err != nil {
		return Batch{}, err
	}
	c := s.cfg
	xs := toF64(x.Data)
	n := len(s.steps)
	pcur := s.tab.point(s.steps[i])
	var m []float64
	if *c.PredictX0 {
		m = x0FromOutput(c.PredictionType, mo, xs, pcur.alpha, pcur.sigma)
		if c.Thresholding {
			c.threshold(m, x.N)
		}
	} else {
		m = epsFromOutput(c.PredictionType, mo, xs, pcur.alpha, pcur.sigma)
	}
	if i > 0 && !slices.Contains(c.DisableCorrector, i-1) && s.last != nil {
		xs = s.corrector(m, pcur, s.last, s.thisOrder)
	}
	s.push(m)
	copy(s.pts, s.pts[1:])
	s.pts[len(s.pts)-1] = pcur
	order := c.SolverOrder
	if *c.LowerOrderFinal {
		order = min(order, n-i)
	}
	order = min(order, s.lowerNums+1)
	if s.zeroFinal && i == n-1 {
		order = 1 // a higher order step to sigma = 0 divides by r_k = 0
	}
	s.thisOrder = order
	s.last = xs
	res := s.predictor(xs, s.target(i), order)
	if s.lowerNums < c.SolverOrder {
		s.lowerNums++
	}
	s.next++
	return toBatch(x, res), nil
}

// unipcCoefs returns, for a step of size h from the newest history point,
// hh (= -h for data prediction), phi_1 = e^{hh} - 1, B(h), the ratios
// r_k = (lambda_{s_k} - lambda_{s_0}) / h of the order-1 older points
// (then 1), and the right-hand side b of the order conditions.
func (s *unipcSched) unipcCoefs(h float64, order int) (hh, phi1, bh float64, rks, b []float64) {
	hh = h
	if *s.cfg.PredictX0 {
		hh = -h
	}
	phi1 = math.Expm1(hh)
	phik := phi1/hh - 1
	fact := 1.0
	if s.cfg.SolverType == "bh1" {
		bh = hh
	} else {
		bh = math.Expm1(hh)
	}
	s0 := s.pts[len(s.pts)-1]
	for k := 1; k < order; k++ {
		rks = append(rks, (s.pts[len(s.pts)-1-k].lambda-s0.lambda)/h)
	}
	rks = append(rks, 1)
	for k := 1; k <= order; k++ {
		b = append(b, phik*fact/bh)
		fact *= float64(k + 1)
		phik = phik/hh - 1/fact
	}
	return
}

// vandermonde is R[i][j] = rks[j]^i, i, j < k.
func vandermonde(rks []float64, k int) [][]float64 {
	R := make([][]float64, k)
	for i := range R {
		R[i] = make([]float64, k)
		for j := range k {
			R[i][j] = math.Pow(rks[j], float64(i))
		}
	}
	return R
}

// predictor is UniP-p (multistep_uni_p_bh_update) from the newest history
// point to pt.
func (s *unipcSched) predictor(x []float64, pt vpPoint, order int) []float64 {
	s0 := s.pts[len(s.pts)-1]
	m0 := s.hist(0)
	h := pt.lambda - s0.lambda
	_, phi1, bh, rks, b := s.unipcCoefs(h, order)
	var rhos []float64
	if order == 2 {
		rhos = []float64{0.5}
	} else if order > 2 {
		rhos = solveLinear(vandermonde(rks, order-1), b[:order-1])
	}
	out := make([]float64, len(x))
	a, ca := pt.alpha/s0.alpha, pt.sigma
	if *s.cfg.PredictX0 {
		a, ca = ratioSigma(pt, s0), pt.alpha
	}
	for j := range out {
		v := a*x[j] - ca*phi1*m0[j]
		if order > 1 {
			var res float64
			for k, r := range rhos {
				res += r * (s.hist(k + 1)[j] - m0[j]) / rks[k]
			}
			v -= ca * bh * res
		}
		out[j] = v
	}
	return out
}

// corrector is UniC (multistep_uni_c_bh_update): it redoes the last step,
// from the sample last at the newest history point to pt, with the model
// output mt at pt.
func (s *unipcSched) corrector(mt []float64, pt vpPoint, last []float64, order int) []float64 {
	s0 := s.pts[len(s.pts)-1]
	m0 := s.hist(0)
	h := pt.lambda - s0.lambda
	_, phi1, bh, rks, b := s.unipcCoefs(h, order)
	var rhos []float64
	if order == 1 {
		rhos = []float64{0.5}
	} else {
		rhos = solveLinear(vandermonde(rks, order), b)
	}
	out := make([]float64, len(last))
	a, ca := pt.alpha/s0.alpha, pt.sigma
	if *s.cfg.PredictX0 {
		a, ca = ratioSigma(pt, s0), pt.alpha
	}
	for j := range out {
		var res float64
		for k := 0; k < order-1; k++ {
			res += rhos[k] * (s.hist(k + 1)[j] - m0[j]) / rks[k]
		}
		res += rhos[order-1] * (mt[j] - m0[j])
		out[j] = a*last[j] - ca*phi1*m0[j] - ca*bh*res
	}
	return out
}

// solveLinear solves A x = b by Gaussian elimination with partial
// pivoting (A is small: at most 3x3). A and b are not modified.
func solveLinear(A [][]float64, b []float64) []float64 {
	n := len(b)
	M := make([][]float64, n)
	for i := range M {
		M[i] = append(slices.Clone(A[i]), b[i])
	}
	for col := range n {
		p := col
		for r := col + 1; r < n; r++ {
			if math.Abs(M[r][col]) > math.Abs(M[p][col]) {
				p = r
			}
		}
		M[col], M[p] = M[p], M[col]
		for r := col + 1; r < n; r++ {
			f := M[r][col] / M[col][col]
			for k := col; k <= n; k++ {
				M[r][k] -= f * M[col][k]
			}
		}
	}
	x := make([]float64, n)
	for i := n - 1; i >= 0; i-- {
		v := M[i][n]
		for k := i + 1; k < n; k++ {
			v -= M[i][k] * x[k]
		}
		x[i] = v / M[i][i]
	}
	return x
}
