package diffusion

import "math"

// NormalKL is KL(N(mean1, exp(logVar1)) || N(mean2, exp(logVar2))) in nats
// for scalars:
//
//	0.5 (-1 + logVar2 - logVar1 + exp(logVar1 - logVar2) + (mean1 - mean2)^2 exp(-logVar2))
//
// (improved-diffusion's normal_kl). It is >= 0 and 0 only for equal
// Gaussians.
func NormalKL(mean1, logVar1, mean2, logVar2 float64) float64 {
	d := mean1 - mean2
	return 0.5 * (-1 + logVar2 - logVar1 + math.Exp(logVar1-logVar2) + d*d*math.Exp(-logVar2))
}

// normalKLGrad returns NormalKL and its partial derivatives with respect to
// mean2 and logVar2 (the model's side).
func normalKLGrad(mean1, logVar1, mean2, logVar2 float64) (kl, dMean2, dLogVar2 float64) {
	d := mean1 - mean2
	iv := math.Exp(-logVar2)
	r := math.Exp(logVar1 - logVar2)
	kl = 0.5 * (-1 + logVar2 - logVar1 + r + d*d*iv)
	dMean2 = -d * iv
	dLogVar2 = 0.5 * (1 - r - d*d*iv)
	return
}

// StdNormalCDF is Phi(x) = P(Z <= x) for Z ~ N(0, 1), computed with erfc so
// that the lower tail keeps its relative precision. (improved-diffusion
// uses a tanh approximation; this is the exact function.)
func StdNormalCDF(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }

func stdNormalPDF(x float64) float64 { return math.Exp(-0.5*x*x) / math.Sqrt(2*math.Pi) }

// logProbFloor is the floor applied to bin probabilities before the log,
// as improved-diffusion's discretized_gaussian_log_likelihood (1e-12).
const logProbFloor = 1e-12

// binHalfWidth is half the width of one of the 256 bins of [-1, 1] that
// 8-bit pixel values map to: (2/255)/2.
const binHalfWidth = 1.0 / 255

// DiscretizedGaussianLogLikelihood is log P(x) under the discretised
// Gaussian decoder of Ho et al. 2020, Eq. 13: the mass of N(mean,
// exp(logScale)^2) over the bin [x - 1/255, x + 1/255], with the edge bins
// extended to -inf (x < -0.999) and +inf (x > 0.999), for x a pixel value
// in [-1, 1] on the grid (2k/255 - 1). Probabilities are floored at 1e-12.
// Summed over the 256 bins the probabilities are 1 (up to the floor, at
// most 256e-12).
func DiscretizedGaussianLogLikelihood(x, mean, logScale float64) float64 {
	lp, _, _ := discretizedGaussianLogLikGrad(x, mean, logScale)
	return lp
}

// discretizedGaussianLogLikGrad returns the log-likelihood and its partial
// derivatives with respect to mean and logScale (0 where the floor is hit).
func discretizedGaussianLogLikGrad(x, mean, logScale float64) (lp, dMean, dLogScale float64) {
	inv := math.Exp(-logScale)
	c := x - mean
	a := inv * (c + binHalfWidth) // upper bin edge, standardised
	b := inv * (c - binHalfWidth) // lower bin edge, standardised
	switch {
	case x < -0.999:
		p := StdNormalCDF(a)
		if p < logProbFloor {
			return math.Log(logProbFloor), 0, 0
		}
		r := stdNormalPDF(a) / p
		return math.Log(p), -inv * r, -a * r
	case x > 0.999:
		p := StdNormalCDF(-b)
		if p < logProbFloor {
			return math.Log(logProbFloor), 0, 0
		}
		r := stdNormalPDF(b) / p
		return math.Log(p), inv * r, b * r
	}
	var p float64
	switch {
	case b > 0: // both edges above the mean: use upper tails
		p = StdNormalCDF(-b) - StdNormalCDF(-a)
	case a < 0: // both below: lower tails
		p = StdNormalCDF(a) - StdNormalCDF(b)
	default:
		p = 1 - StdNormalCDF(-a) - StdNormalCDF(b)
	}
	if p < logProbFloor {
		return math.Log(logProbFloor), 0, 0
	}
	pa, pb := stdNormalPDF(a), stdNormalPDF(b)
	return math.Log(p), -inv * (pa - pb) / p, -(a*pa - b*pb) / p
}
