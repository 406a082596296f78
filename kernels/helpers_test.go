package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

const guard = 16

// gbuf is a buffer of n values wrapped in NaN guard bands on both sides,
// to catch writes outside [0, n).
type gbuf struct {
	full []float32
	n    int
}

// newOut returns a guarded buffer filled with NaN (an op that accumulates
// into its output instead of overwriting it then yields NaN).
func newOut(n int) *gbuf {
	b := &gbuf{full: make([]float32, n+2*guard), n: n}
	for i := range b.full {
		b.full[i] = float32(math.NaN())
	}
	return b
}

// newIn returns a guarded buffer holding vals.
func newIn(vals []float32) *gbuf {
	b := newOut(len(vals))
	copy(b.v(), vals)
	return b
}

func (b *gbuf) v() []float32 { return b.full[guard : guard+b.n] }

func (b *gbuf) checkGuard(t *testing.T, name string) {
	t.Helper()
	for i := 0; i < guard; i++ {
		if !isNaN(b.full[i]) || !isNaN(b.full[len(b.full)-1-i]) {
			t.Fatalf("%s: guard band overwritten", name)
		}
	}
}

func isNaN(v float32) bool { return v != v }

func rnd(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func f64(s []float32) []float64 {
	o := make([]float64, len(s))
	for i, v := range s {
		o[i] = float64(v)
	}
	return o
}

func clone(s []float32) []float32 { return append([]float32(nil), s...) }

// near checks |got - want| <= abs + |want|*rel elementwise (NaN fails).
func near(t *testing.T, name string, got []float32, want []float64, abs, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: len %d, want %d", name, len(got), len(want))
	}
	for i := range want {
		d := math.Abs(float64(got[i]) - want[i])
		if !(d <= abs+math.Abs(want[i])*rel) {
			t.Fatalf("%s[%d] = %v, want %v (|diff| %.3g > %.3g + |want|*%.3g)", name, i, got[i], want[i], d, abs, rel)
		}
	}
}

func same(t *testing.T, name string, got, want []float32) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] && !(isNaN(got[i]) && isNaN(want[i])) {
			t.Fatalf("%s: input modified at %d", name, i)
		}
	}
}

// fdCheck compares grad (the op's backward) with central differences of
// loss in theta (float64, step 1e-4) at up to 24 random coordinates, with
// tolerance abs + |fd|*rel.
func fdCheck(t *testing.T, name string, r *rand.Rand, theta []float64, loss func() float64, grad []float32, abs, rel float64) {
	t.Helper()
	const h = 1e-4
	for trial := 0; trial < min(24, len(theta)); trial++ {
		j := r.IntN(len(theta))
		if trial < len(theta) && len(theta) <= 24 {
			j = trial
		}
		old := theta[j]
		theta[j] = old + h
		lp := loss()
		theta[j] = old - h
		lm := loss()
		theta[j] = old
		fd := (lp - lm) / (2 * h)
		if d := math.Abs(fd - float64(grad[j])); !(d <= abs+math.Abs(fd)*rel) {
			t.Fatalf("%s: d/d[%d] = %v, finite difference %v", name, j, grad[j], fd)
		}
	}
}

func dot64(a []float64, b []float32) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * float64(b[i])
	}
	return s
}

func dot32(a, b []float32) float64 {
	s := 0.0
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// backends returns the CPU configurations under test: pure Go with one
// and two threads, and each native BLAS found on this machine.
func backends(t testing.TB) []*CPU {
	var out []*CPU
	for _, o := range []CPUOptions{{BLAS: BLASGonum, Threads: 1}, {BLAS: BLASGonum, Threads: 2}, {BLAS: BLASDNNL, Threads: 2, Conv: ConvIm2col}, {BLAS: BLASDNNL, Threads: 2, Conv: ConvDNNL}, {BLAS: BLASDNNL, Threads: 3, Conv: ConvDNNL}, {BLAS: BLASOpenBLAS, Threads: 3}} {
		c, err := NewCPU(o)
		if err != nil {
			t.Logf("skipping %+v: %v", o, err)
			continue
		}
		out = append(out, c)
	}
	return out
}
