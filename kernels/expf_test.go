package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExpf compares expf with math.Exp over its whole range, plus the
// edges: relative error <= 3e-7 (about 2.5 ulp) where the result is normal.
func TestExpf(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	xs := []float32{0, -0, 1, -1, 0.3465736, -0.3465736, 0.3465737, -87.33, -87.34, -100, 87.9, 88, 88.5, 89, -1e-8, 1e-8}
	for i := 0; i < 200000; i++ {
		xs = append(xs, float32(r.Float64()*176-88))
	}
	for i := 0; i < 20000; i++ {
		xs = append(xs, float32(r.NormFloat64()))
	}
	for _, x := range xs {
		got := float64(expf(x))
		want := math.Exp(float64(x))
		if want < 1.1754944e-38 { // below the smallest normal: flushed to 0
			if got > 1.2e-38 {
				t.Fatalf("expf(%v) = %v, want about %v", x, got, want)
			}
			continue
		}
		if want > math.MaxFloat32 {
			if !math.IsInf(got, 1) {
				t.Fatalf("expf(%v) = %v, want +Inf", x, got)
			}
			continue
		}
		if rel := math.Abs(got-want) / want; rel > 3e-7 {
			t.Fatalf("expf(%v) = %v, want %v (relative error %.3g)", x, got, want, rel)
		}
	}
	if v := expf(float32(math.NaN())); v == v {
		t.Fatal("expf(NaN) not NaN")
	}
	if v := expf(float32(math.Inf(-1))); v != 0 {
		t.Fatalf("expf(-Inf) = %v", v)
	}
}

func BenchmarkExpf(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(i)/4096*20 - 15
	}
	var s float32
	for i := 0; i < b.N; i++ {
		for _, v := range x {
			s += expf(v)
		}
	}
	_ = s
	b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds()/1e9, "Gexp/s")
}

// TestSigmoid compares sigmoid with its float64 formula: relative error
// <= 4e-7 where sigmoid(x) is a normal float32, absolute 1.2e-38 below.
func TestSigmoid(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	xs := []float32{0, 1, -1, 20, -20, 87, -87, 88, -88, 100, -100, -103, 1e-8}
	for i := 0; i < 100000; i++ {
		xs = append(xs, float32(r.NormFloat64()*10))
	}
	for _, x := range xs {
		got, want := float64(sigmoid(x)), 1/(1+math.Exp(-float64(x)))
		tol := 4e-7 * want
		if want < 1.2e-38 { // e^x below the smallest normal is flushed to 0
			tol = 1.2e-38
		}
		if !(math.Abs(got-want) <= tol) {
			t.Fatalf("sigmoid(%v) = %v, want %v", x, got, want)
		}
	}
	if v := sigmoid(float32(math.NaN())); v == v {
		t.Fatal("sigmoid(NaN) not NaN")
	}
}
