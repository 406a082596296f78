package schedule

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/npy"
)

func near(a, b, abs, rel float64) bool {
	return math.Abs(a-b) <= abs+rel*math.Abs(b)
}

func TestPublishedValues(t *testing.T) {
	s := MustNew(Spec{Kind: Linear, T: 1000})
	cases := []struct {
		name      string
		got, want float64
		abs, rel  float64
	}{
		{"betas[0]", s.Betas[0], 1e-4, 1e-15, 0},
		{"betas[999]", s.Betas[999], 0.02, 1e-15, 0},
		{"alphas_cumprod[999]", s.AlphasCumprod[999], 4.04e-5, 0, 0.01},
		{"posterior_variance[487]", s.PosteriorVariance[487], 0.00979, 0, 0.002},
		{"posterior_variance[999]", s.PosteriorVariance[999], 0.02, 0, 0.001},
		{"posterior_variance[0]", s.PosteriorVariance[0], 0, 0, 0},
		{"log_var_clipped[0]==[1]", s.PosteriorLogVarianceClipped[0], s.PosteriorLogVarianceClipped[1], 0, 0},
	}
	for _, c := range cases {
		if !near(c.got, c.want, c.abs, c.rel) {
			t.Errorf("%s = %v, want %v (abs %g rel %g)", c.name, c.got, c.want, c.abs, c.rel)
		}
	}
}

func TestKindsValidAndMonotone(t *testing.T) {
	for _, k := range []Kind{Linear, Cosine, ScaledLinear, Sigmoid} {
		for _, T := range []int{1, 2, 7, 10, 100, 1000, 4000} {
			t.Run(k.String()+"/"+strconv.Itoa(T), func(t *testing.T) {
				s, err := New(Spec{Kind: k, T: T})
				if err != nil {
					t.Fatal(err)
				}
				if s.T() != T {
					t.Fatalf("T() = %d", s.T())
				}
				for i := range s.Betas {
					if !(s.Betas[i] > 0 && s.Betas[i] < 1) {
						t.Fatalf("betas[%d] = %v", i, s.Betas[i])
					}
					if i > 0 && s.AlphasCumprod[i] >= s.AlphasCumprod[i-1] {
						t.Fatalf("alphas_cumprod not decreasing at %d", i)
					}
					for _, v := range []float64{s.PosteriorLogVarianceClipped[i], s.SqrtRecipM1AlphasCumprod[i], s.PosteriorMeanCoef1[i], s.PosteriorMeanCoef2[i]} {
						if math.IsNaN(v) || math.IsInf(v, 0) {
							t.Fatalf("non-finite table entry at %d: %v", i, v)
						}
					}
				}
			})
		}
	}
}

func TestLogSNR(t *testing.T) {
	s := MustNew(Spec{Kind: Cosine, T: 50})
	l := s.LogSNR()
	for i, v := range l {
		ac := s.AlphasCumprod[i]
		if want := math.Log(ac / (1 - ac)); !near(v, want, 1e-12, 1e-12) {
			t.Errorf("LogSNR[%d] = %v, want log(%v / (1 - %v)) = %v", i, v, ac, ac, want)
		}
		if i > 0 && !(v < l[i-1]) {
			t.Errorf("LogSNR not decreasing at %d: %v after %v", i, v, l[i-1])
		}
	}
	l[0] = 99
	if s.SNR[0] == math.Exp(99) || s.LogSNR()[0] == 99 {
		t.Error("LogSNR shares memory with the schedule")
	}
}

func TestCosineFormula(t *testing.T) {
	// alphabar_t must equal f(t+1)/f(0) wherever no beta was clipped.
	T := 1000
	s := MustNew(Spec{Kind: Cosine, T: T})
	f := func(u float64) float64 { c := math.Cos((u + 0.008) / 1.008 * math.Pi / 2); return c * c }
	for _, i := range []int{0, 1, 100, 500, 900} {
		want := f(float64(i+1)/float64(T)) / f(0)
		if !near(s.AlphasCumprod[i], want, 1e-12, 1e-9) {
			t.Errorf("alphas_cumprod[%d] = %v, want %v", i, s.AlphasCumprod[i], want)
		}
	}
	if s.Betas[T-1] != CosineMaxBeta {
		t.Errorf("last cosine beta = %v, want clipped to %v", s.Betas[T-1], CosineMaxBeta)
	}
}

// TestScaledLinearAndSigmoid checks the two diffusers-only schedules
// against values numpy computed from diffusers' expressions in float64
// (T = 10, default betas): linspace(sqrt(0.00085), sqrt(0.012), 10)**2 and
// sigmoid(linspace(-6, 6, 10)) * (0.02 - 1e-4) + 1e-4, at t = 0, 3, 9.
func TestScaledLinearAndSigmoid(t *testing.T) {
	cases := []struct {
		kind Kind
		want [3]float64
	}{
		{ScaledLinear, [3]float64{0.00085, 0.003130552837570784, 0.012}},
		{Sigmoid, [3]float64{0.00014920520081703202, 0.002472138148240139, 0.01995079479918297}},
	}
	for _, c := range cases {
		s := MustNew(Spec{Kind: c.kind, T: 10})
		for i, tt := range []int{0, 3, 9} {
			if !near(s.Betas[tt], c.want[i], 0, 1e-14) {
				t.Errorf("%s: betas[%d] = %v, numpy %v", c.kind, tt, s.Betas[tt], c.want[i])
			}
		}
	}
}

// TestLinearRescale checks improved-diffusion's 1000/T scaling of the
// default linear betas, the 0.999 cap for small T, and that explicit betas
// are not rescaled.
func TestLinearRescale(t *testing.T) {
	cases := []struct {
		spec        Spec
		first, last float64
	}{
		{Spec{Kind: Linear, T: 4000}, 2.5e-5, 0.005},
		{Spec{Kind: Linear, T: 100}, 1e-3, 0.2},
		{Spec{Kind: Linear, T: 10}, 1e-2, CosineMaxBeta}, // 100 * 0.02 = 2, capped
		{Spec{Kind: Linear, T: 100, BetaEnd: 0.05}, 1e-4, 0.05},
	}
	for _, c := range cases {
		s := MustNew(c.spec)
		if !near(s.Betas[0], c.first, 0, 1e-12) || !near(s.Betas[s.T()-1], c.last, 0, 1e-12) {
			t.Errorf("%+v: betas from %v to %v, want %v to %v", c.spec, s.Betas[0], s.Betas[s.T()-1], c.first, c.last)
		}
	}
}

func TestInvalid(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name string
		spec Spec
		want string
	}{
		{"T0", Spec{Kind: Linear, T: 0}, "1.."},
		{"Tneg", Spec{Kind: Cosine, T: -3}, "1.."},
		{"beta zero", Spec{Kind: Custom, Betas: []float64{0.1, 0}}, "(0, 1)"},
		{"beta one", Spec{Kind: Custom, Betas: []float64{1}}, "(0, 1)"},
		{"beta nan", Spec{Kind: Custom, Betas: []float64{nan}}, "(0, 1)"},
		{"custom empty", Spec{Kind: Custom}, "need 1.."},
		{"custom T mismatch", Spec{Kind: Custom, T: 3, Betas: []float64{0.1}}, "agree"},
		{"start nan", Spec{Kind: Linear, T: 10, BetaStart: nan}, "(0, 1)"},
		{"end too big", Spec{Kind: Sigmoid, T: 10, BetaEnd: 1.5}, "(0, 1)"},
		{"unknown kind", Spec{Kind: Kind(42), T: 10}, "allowed"},
		{"betas on linear", Spec{Kind: Linear, T: 1, Betas: []float64{0.1}}, "custom"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.spec)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
	if _, err := ParseKind("quadratic"); err == nil || !strings.Contains(err.Error(), "allowed") {
		t.Errorf("ParseKind(quadratic) err = %v", err)
	}
}

func TestParseKindRoundTrip(t *testing.T) {
	for _, k := range []Kind{Linear, Cosine, ScaledLinear, Sigmoid, Custom} {
		got, err := ParseKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseKind(%q) = %v, %v", k, got, err)
		}
		b, _ := k.MarshalText()
		var k2 Kind
		if err := k2.UnmarshalText(b); err != nil || k2 != k {
			t.Errorf("text round trip %v: %v %v", k, k2, err)
		}
	}
	for in, want := range map[string]Kind{"squaredcos_cap_v2": Cosine, "scaled_linear": ScaledLinear, "LINEAR": Linear} {
		if got, err := ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %v, %v", in, got, err)
		}
	}
}

// TestPosteriorBayes checks q(x_{t-1} | x_t, x_0) against Bayes' rule
// evaluated numerically on a grid: p(x_{t-1} | x_t, x_0) is proportional to
// q(x_t | x_{t-1}) q(x_{t-1} | x_0), whose normalised moments must match the
// closed-form mean and variance.
func TestPosteriorBayes(t *testing.T) {
	s := MustNew(Spec{Kind: Linear, T: 1000})
	x0 := []float64{0.3}
	xt := []float64{-0.7}
	for _, tt := range []int{1, 10, 487, 999} {
		acp := s.AlphasCumprod[tt-1]
		mPrev, vPrev := math.Sqrt(acp)*x0[0], 1-acp
		beta := s.Betas[tt]
		// Integrate on a grid covering both the prior q(x_{t-1} | x_0) and
		// the likelihood's peak, in log space to avoid underflow.
		lsd := math.Sqrt(beta / (1 - beta))
		peak := xt[0] / math.Sqrt(1-beta)
		lo := math.Min(mPrev-12*math.Sqrt(vPrev), peak-12*lsd)
		hi := math.Max(mPrev+12*math.Sqrt(vPrev), peak+12*lsd)
		n := 200000
		h := (hi - lo) / float64(n)
		logw := make([]float64, n+1)
		maxw := math.Inf(-1)
		for i := range logw {
			x := lo + float64(i)*h
			d1 := xt[0] - math.Sqrt(1-beta)*x
			d2 := x - mPrev
			logw[i] = -d1*d1/(2*beta) - d2*d2/(2*vPrev)
			maxw = math.Max(maxw, logw[i])
		}
		var z, m1, m2 float64
		for i, lw := range logw {
			x := lo + float64(i)*h
			w := math.Exp(lw - maxw)
			z += w
			m1 += w * x
			m2 += w * x * x
		}
		mean := m1 / z
		variance := m2/z - mean*mean
		dst := make([]float64, 1)
		v, lv, err := s.PosteriorMeanVariance(dst, x0, xt, tt)
		if err != nil {
			t.Fatal(err)
		}
		if !near(dst[0], mean, 1e-7, 1e-6) || !near(v, variance, 1e-9, 1e-4) || !near(lv, math.Log(variance), 1e-4, 0) {
			t.Errorf("t=%d: closed form mean %v var %v, Bayes %v %v", tt, dst[0], v, mean, variance)
		}
	}
}

func TestQSampleStatistics(t *testing.T) {
	s := MustNew(Spec{Kind: Cosine, T: 100})
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 200000
	x0 := make([]float64, n)
	noise := make([]float64, n)
	for i := range x0 {
		x0[i] = 0.5
		noise[i] = rng.NormFloat64()
	}
	for _, tt := range []int{0, 30, 99} {
		xt := make([]float64, n)
		if err := s.QSample(xt, x0, noise, tt); err != nil {
			t.Fatal(err)
		}
		var m, m2 float64
		for _, v := range xt {
			m += v
			m2 += v * v
		}
		m /= n
		variance := m2/n - m*m
		mc, qv, _, _ := s.QMeanVariance(tt)
		// 5 standard errors.
		if math.Abs(m-mc*0.5) > 5*math.Sqrt(qv/n) || math.Abs(variance-qv) > 5*qv*math.Sqrt(2.0/n) {
			t.Errorf("t=%d: sample mean %v var %v, want %v %v", tt, m, variance, mc*0.5, qv)
		}
	}
	if err := s.QSample(make([]float64, 2), x0, noise, 0); err == nil {
		t.Error("length mismatch accepted")
	}
	if err := s.QSample(x0, x0, noise, 100); err == nil {
		t.Error("t = T accepted")
	}
}

func TestSpacedTimesteps(t *testing.T) {
	cases := []struct {
		T, n int
		sp   Spacing
		off  int
		want []int
	}{
		{1000, 50, Leading, 0, nil}, // checked below: 0, 20, ..., 980
		{1000, 10, Linspace, 0, []int{0, 111, 222, 333, 444, 555, 666, 777, 888, 999}},
		{1000, 10, Trailing, 0, []int{99, 199, 299, 399, 499, 599, 699, 799, 899, 999}},
		{10, 3, Leading, 1, []int{1, 4, 7}},
		{10, 3, Trailing, 0, []int{2, 6, 9}},
		{5, 5, Linspace, 0, []int{0, 1, 2, 3, 4}},
		{7, 1, Linspace, 0, []int{0}},
		{7, 1, Trailing, 0, []int{6}},
		// From numpy 1.24 (diffusers' expressions), where float64
		// rounding moves a half: sorted(np.linspace(0, 29, 15).round())
		// and sorted(np.round(np.arange(T, 0, -T/n)) - 1).
		{30, 15, Linspace, 0, []int{0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23, 25, 27, 29}},
		{7, 6, Trailing, 0, []int{0, 1, 2, 4, 5, 6}},
		{11, 6, Trailing, 0, []int{1, 3, 4, 6, 8, 10}},
	}
	for _, c := range cases {
		got, err := SpacedTimesteps(c.T, c.n, c.sp, c.off)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		if c.want == nil {
			c.want = make([]int, 50)
			for i := range c.want {
				c.want[i] = 20 * i
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("SpacedTimesteps(%d, %d, %v, %d) = %v, want %v", c.T, c.n, c.sp, c.off, got, c.want)
		}
	}
	for _, bad := range [][3]int{{10, 0, 0}, {10, 11, 0}, {0, 1, 0}} {
		if _, err := SpacedTimesteps(bad[0], bad[1], Leading, bad[2]); err == nil {
			t.Errorf("SpacedTimesteps%v accepted", bad)
		}
	}
	if _, err := SpacedTimesteps(10, 5, Leading, 9); err == nil {
		t.Error("offset past T accepted")
	}
}

func TestSectionTimesteps(t *testing.T) {
	cases := []struct {
		T    int
		s    string
		want []int
	}{
		{1000, "ddim4", []int{0, 250, 500, 750}},
		{10, "2,3", []int{0, 4, 5, 7, 9}},
		{10, "10", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{100, "ddim100", nil},
	}
	for _, c := range cases {
		got, err := SectionTimesteps(c.T, c.s)
		if err != nil {
			t.Fatalf("%q: %v", c.s, err)
		}
		if c.want == nil {
			if len(got) != c.T {
				t.Errorf("%q: %d steps", c.s, len(got))
			}
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("SectionTimesteps(%d, %q) = %v, want %v", c.T, c.s, got, c.want)
		}
	}
	// improved-diffusion's docstring example: 300 steps, "10,15,20" keeps
	// 10 from the first 100, 15 from the second, 20 from the third.
	got, err := SectionTimesteps(300, "10,15,20")
	if err != nil || len(got) != 45 || got[0] != 0 || got[9] != 99 || got[10] != 100 || got[44] != 299 {
		t.Errorf("10,15,20 over 300: %v %v", got, err)
	}
	for _, bad := range []string{"ddim80", "ddimx", "a,b", "200", ""} {
		if _, err := SectionTimesteps(100, bad); err == nil {
			t.Errorf("SectionTimesteps(100, %q) accepted", bad)
		}
	}
}

func TestRespace(t *testing.T) {
	s := MustNew(Spec{Kind: Linear, T: 1000})
	use, _ := SpacedTimesteps(1000, 50, Leading, 0)
	r, err := s.Respace(use)
	if err != nil {
		t.Fatal(err)
	}
	for k, tt := range use {
		if r.Timesteps[k] != tt {
			t.Fatalf("Timesteps[%d] = %d, want %d", k, r.Timesteps[k], tt)
		}
		if !near(r.AlphasCumprod[k], s.AlphasCumprod[tt], 0, 1e-12) {
			t.Errorf("respaced alphas_cumprod[%d] = %v, want %v", k, r.AlphasCumprod[k], s.AlphasCumprod[tt])
		}
	}
	// Respacing a respaced schedule composes the maps.
	r2, err := r.Respace([]int{1, 3})
	if err != nil || r2.Timesteps[0] != 20 || r2.Timesteps[1] != 60 {
		t.Fatalf("composed map %v, %v", r2.Timesteps, err)
	}
	// Full respace is the identity.
	all, _ := SpacedTimesteps(1000, 1000, Leading, 0)
	id, _ := s.Respace(all)
	for i := range s.Betas {
		if !near(id.Betas[i], s.Betas[i], 1e-15, 1e-12) {
			t.Fatalf("identity respace changed betas[%d]", i)
		}
	}
	for _, bad := range [][]int{nil, {3, 3}, {-1}, {1000}, {5, 2}} {
		if _, err := s.Respace(bad); err == nil {
			t.Errorf("Respace(%v) accepted", bad)
		}
	}
}

func fixtures(t *testing.T) string {
	dir := filepath.Join("..", "..", "shared", "fixtures", "diffusers-scheduler")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("diffusers fixtures not found at %s (they live in the shared checkout next to main): %v", dir, err)
	}
	return dir
}

func readF64(t *testing.T, path string) []float64 {
	t.Helper()
	a, err := npy.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return a.Float64s()
}

func TestDiffusersTables(t *testing.T) {
	dir := fixtures(t)
	cases := []struct {
		config, betas, ac string
	}{
		{"ddpm_config", "ddpm_linear_betas.npy", "ddpm_linear_alphas_cumprod.npy"},
		{"ddim_config", "", "ddim_alphas_cumprod.npy"},
		{"", "cos_betas.npy", "cos_alphas_cumprod.npy"},
	}
	for _, c := range cases {
		t.Run(c.ac, func(t *testing.T) {
			var spec Spec
			if c.config != "" {
				data, err := os.ReadFile(filepath.Join(dir, c.config, "scheduler_config.json"))
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := ParseDiffusersConfig(data)
				if err != nil {
					t.Fatal(err)
				}
				if spec, err = cfg.Spec(); err != nil {
					t.Fatal(err)
				}
			} else {
				spec = Spec{Kind: Cosine, T: 1000}
			}
			s, err := New(spec)
			if err != nil {
				t.Fatal(err)
			}
			// diffusers stores float32 tables: compare at float32 precision
			// (its cumprod runs in float32, so allow a few ulps per step).
			if c.betas != "" {
				for i, want := range readF64(t, filepath.Join(dir, c.betas)) {
					if !near(s.Betas[i], want, 1e-9, 1e-6) {
						t.Fatalf("betas[%d] = %v, diffusers %v", i, s.Betas[i], want)
					}
				}
			}
			for i, want := range readF64(t, filepath.Join(dir, c.ac)) {
				if !near(s.AlphasCumprod[i], want, 1e-9, 2e-5) {
					t.Fatalf("alphas_cumprod[%d] = %v, diffusers %v", i, s.AlphasCumprod[i], want)
				}
			}
		})
	}
}

func TestDiffusersVariance(t *testing.T) {
	dir := fixtures(t)
	a, err := npy.ReadFile(filepath.Join(dir, "ddpm_variance_t.npy"))
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := a.Int64s()
	want := readF64(t, filepath.Join(dir, "ddpm_variance.npy"))
	s := MustNew(Spec{Kind: Linear, T: 1000})
	for i, tt := range ts {
		got := math.Max(s.PosteriorVariance[tt], 1e-20) // diffusers clamps at 1e-20
		// diffusers computes 1 - alphabar_t in float32, which loses
		// about 1e-7/(1 - alphabar_t) relative precision at small t.
		if !near(got, want[i], 1e-12, 5e-4) {
			t.Errorf("variance at t=%d = %v, diffusers %v", tt, got, want[i])
		}
	}
}

// TestDiffusersTimesteps checks the inference timesteps of diffusers'
// DDPMScheduler (all 1000, 999..0) and DDIMScheduler (50 leading steps,
// 980..0), and that the respaced DDIM process ends at alphabar = 1, as
// diffusers' final_alpha_cumprod with set_alpha_to_one.
func TestDiffusersTimesteps(t *testing.T) {
	dir := fixtures(t)
	s := MustNew(Spec{Kind: Linear, T: 1000})
	for _, c := range []struct {
		file string
		n    int
	}{{"ddpm_timesteps.npy", 1000}, {"ddim_timesteps.npy", 50}} {
		a, err := npy.ReadFile(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		want, err := a.Int64s()
		if err != nil {
			t.Fatal(err)
		}
		got, err := SpacedTimesteps(1000, c.n, Leading, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(want) != len(got) {
			t.Fatalf("%s: %d timesteps, diffusers %d", c.file, len(got), len(want))
		}
		for i := range got {
			if int64(got[len(got)-1-i]) != want[i] {
				t.Fatalf("%s: timestep %d = %d, diffusers %d", c.file, i, got[len(got)-1-i], want[i])
			}
		}
		r, err := s.Respace(got)
		if err != nil {
			t.Fatal(err)
		}
		final := readF64(t, filepath.Join(dir, "ddim_final_alpha_cumprod.npy"))
		if len(final) != 1 || r.AlphasCumprodPrev[0] != final[0] {
			t.Errorf("%s: alphabar before the first kept step %v, diffusers final_alpha_cumprod %v", c.file, r.AlphasCumprodPrev[0], final)
		}
	}
}

func TestParseDiffusersConfigErrors(t *testing.T) {
	cases := []struct{ name, json, want string }{
		{"syntax", `{`, "scheduler_config.json"},
		{"schedule", `{"beta_schedule":"quadratic"}`, "allowed"},
		{"T", `{"num_train_timesteps":-5}`, "num_train_timesteps"},
		{"trained mismatch", `{"num_train_timesteps":3,"trained_betas":[0.1]}`, "trained_betas"},
		{"zero snr", `{"rescale_betas_zero_snr":true}`, "rescale_betas_zero_snr"},
		{"spacing", `{"timestep_spacing":"middle"}`, "timestep_spacing"},
		{"beta range", `{"beta_end":2}`, "beta_end"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseDiffusersConfig([]byte(c.json))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
	c, err := ParseDiffusersConfig([]byte(`{"num_train_timesteps":2,"trained_betas":[0.1,0.2],"timestep_spacing":"trailing"}`))
	if err != nil || c.Spacing() != Trailing {
		t.Fatalf("%v %v", c, err)
	}
	sp, _ := c.Spec()
	if sp.Kind != Custom || len(sp.Betas) != 2 {
		t.Errorf("spec %+v", sp)
	}
}

func FuzzParseDiffusersConfig(f *testing.F) {
	f.Add([]byte(`{"num_train_timesteps":1000,"beta_schedule":"linear"}`))
	f.Add([]byte(`{"trained_betas":[0.5],"num_train_timesteps":1}`))
	f.Add([]byte(`{"beta_schedule":"squaredcos_cap_v2","num_train_timesteps":10}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseDiffusersConfig(data)
		if err != nil {
			return
		}
		if c.NumTrainTimesteps > 5000 {
			return
		}
		sp, err := c.Spec()
		if err != nil {
			t.Fatalf("parsed config has no spec: %v", err)
		}
		if _, err := New(sp); err != nil {
			t.Fatalf("parsed config gives no schedule: %v", err)
		}
	})
}
