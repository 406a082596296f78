package quality

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// Stats are the mean and covariance of a set of feature vectors, the
// sufficient statistics of the Fréchet distance.
type Stats struct {
	N    int           // vectors seen
	Mean []float64     // (D)
	Cov  *mat.SymDense // (D, D), the unbiased sample covariance
}

// NewStats computes the statistics of n feature vectors of dimension dim
// stored row by row in x (len n*dim). It needs n >= 2.
func NewStats(x []float32, n, dim int) (Stats, error) {
	if n < 2 || dim < 1 || len(x) != n*dim {
		return Stats{}, fmt.Errorf("quality: stats of %d values as %d vectors of %d: need n >= 2, dim >= 1 and n*dim values", len(x), n, dim)
	}
	mean := make([]float64, dim)
	for i := range n {
		for j, v := range x[i*dim : (i+1)*dim] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return Stats{}, fmt.Errorf("quality: feature %d of vector %d is %v", j, i, v)
			}
			mean[j] += float64(v)
		}
	}
	for j := range mean {
		mean[j] /= float64(n)
	}
	cov := mat.NewSymDense(dim, nil)
	c := make([]float64, dim)
	for i := range n {
		for j, v := range x[i*dim : (i+1)*dim] {
			c[j] = float64(v) - mean[j]
		}
		cov.SymRankOne(cov, 1, mat.NewVecDense(dim, c))
	}
	cov.ScaleSym(1/float64(n-1), cov)
	return Stats{N: n, Mean: mean, Cov: cov}, nil
}

// FrechetDistance is the squared Fréchet (2-Wasserstein) distance between
// the Gaussians N(a.Mean, a.Cov) and N(b.Mean, b.Cov):
//
//	d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^{1/2} S_b S_a^{1/2})^{1/2})
//
// The last trace is computed from the eigenvalues of the symmetric
// matrix S_a^{1/2} S_b S_a^{1/2} (negative round-off clamped to 0), which
// is better conditioned than the sqrtm(S_a S_b) of common FID code.
func FrechetDistance(a, b Stats) (float64, error) {
	if a.Cov == nil || b.Cov == nil || len(a.Mean) != len(b.Mean) {
		return 0, fmt.Errorf("quality: Fréchet distance of %d-d and %d-d statistics", len(a.Mean), len(b.Mean))
	}
	dim := len(a.Mean)
	var d2 float64
	for j := range dim {
		d := a.Mean[j] - b.Mean[j]
		d2 += d * d
	}
	rootA, err := sqrtSym(a.Cov)
	if err != nil {
		return 0, err
	}
	var m, t mat.Dense
	m.Mul(rootA, b.Cov)
	t.Mul(&m, rootA)
	prod := mat.NewSymDense(dim, nil)
	for i := range dim {
		for j := i; j < dim; j++ {
			prod.SetSym(i, j, 0.5*(t.At(i, j)+t.At(j, i)))
		}
	}
	var eig mat.EigenSym
	if !eig.Factorize(prod, false) {
		return 0, fmt.Errorf("quality: eigendecomposition did not converge")
	}
	var cross float64
	for _, v := range eig.Values(nil) {
		cross += math.Sqrt(math.Max(v, 0))
	}
	return d2 + mat.Trace(a.Cov) + mat.Trace(b.Cov) - 2*cross, nil
}

// sqrtSym is the symmetric square root of a positive semi-definite matrix.
func sqrtSym(s *mat.SymDense) (*mat.Dense, error) {
	var eig mat.EigenSym
	if !eig.Factorize(s, true) {
		return nil, fmt.Errorf("quality: eigendecomposition did not converge")
	}
	vals := eig.Values(nil)
	var vecs mat.Dense
	eig.VectorsTo(&vecs)
	n := len(vals)
	d := mat.NewDiagDense(n, nil)
	for i, v := range vals {
		d.SetDiag(i, math.Sqrt(math.Max(v, 0)))
	}
	var tmp, out mat.Dense
	tmp.Mul(&vecs, d)
	out.Mul(&tmp, vecs.T())
	return &out, nil
}
