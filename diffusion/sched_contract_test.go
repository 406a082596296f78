package diffusion

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestSchedulerContract runs every variant through the Scheduler contract:
// inputs are never modified, Step refuses calls out of order and wrong
// shapes, learned-variance channels (2C outputs) are dropped, Level ends at
// -1 and is monotone, AddNoise is q(x_t | x_0) in the solver's space.
func TestSchedulerContract(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	fill := func(b Batch) Batch {
		for i := range b.Data {
			b.Data[i] = float32(rng.NormFloat64())
		}
		return b
	}
	for name, c := range schedVariants() {
		s, err := NewScheduler(c, 7)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s2, _ := NewScheduler(c, 7)
		ts := s.Timesteps()
		ts[0] = -99 // Timesteps returns a copy
		if s.Timesteps()[0] == -99 {
			t.Errorf("%s: Timesteps aliases the scheduler's slice", name)
		}
		x := fill(NewBatch(2, 3, 2, 2))
		x.Data = scaleBatch(x, s.InitNoiseSigma()).Data
		prevLevel := math.Inf(1)
		for k, tk := range s.Timesteps() {
			if tk < 0 || tk > 999 {
				t.Errorf("%s: timestep %d = %v outside 0..999", name, k, tk)
			}
			xc := cloneBatch(x)
			in := s.ScaleModelInput(x, k)
			in.Data[0] += 1 // ScaleModelInput returns a new batch
			if !slices.Equal(x.Data, xc.Data) {
				t.Fatalf("%s: ScaleModelInput modified or aliased x", name)
			}
			out := fill(NewBatch(2, 3, 2, 2))
			out2 := NewBatch(2, 6, 2, 2) // learned variance: mean then variance
			for n := range 2 {
				copy(out2.Data[n*24:n*24+12], out.Data[n*12:(n+1)*12])
				for j := 12; j < 24; j++ {
					out2.Data[n*24+j] = 0.5
				}
			}
			oc := cloneBatch(out)
			if _, err := s.Step(out, x, k+1, nil); err == nil || !strings.Contains(err.Error(), "expected call index") {
				t.Errorf("%s: out-of-order Step: %v", name, err)
			}
			if _, err := s.Step(NewBatch(2, 2, 2, 2), x, k, nil); err == nil {
				t.Errorf("%s: Step accepted a 2-channel output for 3 channels", name)
			}
			var z []float32
			draw := func(b Batch) {
				fill(b)
				z = slices.Clone(b.Data)
			}
			y, err := s.Step(out, x, k, draw)
			if err != nil {
				t.Fatalf("%s call %d: %v", name, k, err)
			}
			if !slices.Equal(x.Data, xc.Data) || !slices.Equal(out.Data, oc.Data) {
				t.Fatalf("%s: Step modified its inputs", name)
			}
			draw2 := func(b Batch) { copy(b.Data, z) }
			if c.VarianceType == nil || !strings.HasPrefix(*c.VarianceType, "learned") {
				y2, err := s2.Step(out2, x, k, draw2)
				if err != nil {
					t.Fatalf("%s call %d, 2C output: %v", name, k, err)
				}
				if !slices.Equal(y.Data, y2.Data) {
					t.Errorf("%s call %d: the variance channels of a 2C output changed the step", name, k)
				}
			}
			for _, v := range y.Data {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s call %d: non-finite sample", name, k)
				}
			}
			if lv, ok := s.Level(k); ok {
				if lv >= prevLevel {
					t.Errorf("%s: Level(%d) = %v not below %v", name, k, lv, prevLevel)
				}
				prevLevel = lv
			}
			x = y
		}
		if lv, ok := s.Level(len(s.Timesteps()) - 1); !ok || lv != -1 {
			t.Errorf("%s: Level after the last call = %v, %v; want -1, true", name, lv, ok)
		}
		if _, ok := s.Level(len(s.Timesteps())); ok {
			t.Errorf("%s: Level past the end reported ok", name)
		}
		if _, err := s.Step(x, x, len(s.Timesteps()), nil); err == nil || !strings.Contains(err.Error(), "over") {
			t.Errorf("%s: Step after the run: %v", name, err)
		}
		// AddNoise at the first timestep is the start of a run:
		// sqrt(ab) x0 + sqrt(1-ab) z (VP) or x0 + sigma z (Euler family).
		x0 := fill(NewBatch(1, 1, 1, 4))
		zn := fill(NewBatch(1, 1, 1, 4))
		t0 := s.Timesteps()[0]
		got := s.AddNoise(x0, zn, t0)
		rc, _ := c.resolve()
		ab := npInterp(t0, newTrainTables(&rc).ac)
		for j := range x0.Data {
			var want float64
			if s.InitNoiseSigma() != 1 {
				want = float64(x0.Data[j]) + math.Sqrt((1-ab)/ab)*float64(zn.Data[j])
			} else {
				want = math.Sqrt(ab)*float64(x0.Data[j]) + math.Sqrt(1-ab)*float64(zn.Data[j])
			}
			if math.Abs(float64(got.Data[j])-want) > 1e-4*(1+math.Abs(want)) {
				t.Errorf("%s: AddNoise at t=%v: %v, want %v", name, t0, got.Data[j], want)
			}
		}
		if a := s.AddNoise(x0, zn, -1); !slices.Equal(a.Data, x0.Data) {
			t.Errorf("%s: AddNoise at -1 is not x0", name)
		}
	}
}

func TestSchedDDPMLearnedNeedsVarianceChannels(t *testing.T) {
	s, err := NewScheduler(SchedulerConfig{ClassName: ClassDDPM, VarianceType: ptr("learned_range")}, 10)
	if err != nil {
		t.Fatal(err)
	}
	x := NewBatch(1, 1, 2, 2)
	if _, err := s.Step(x, x, 0, func(Batch) {}); err == nil || !strings.Contains(err.Error(), "2C") {
		t.Errorf("learned_range with C channels: %v", err)
	}
	if _, err := s.Step(NewBatch(1, 2, 2, 2), x, 0, nil); err == nil || !strings.Contains(err.Error(), "draw") {
		t.Errorf("stochastic step with nil draw: %v", err)
	}
}

func TestSchedPNDMTimesteps(t *testing.T) {
	s, _ := NewScheduler(SchedulerConfig{ClassName: ClassPNDM}, 50)
	ts := s.Timesteps()
	want := []float64{980, 970, 970, 960, 960, 950, 950, 940, 940, 930, 930, 920, 920, 900}
	if len(ts) != 12+47 || !slices.Equal(ts[:14], want) || ts[len(ts)-1] != 0 {
		t.Errorf("PRK timesteps %v (%d calls)", ts[:14], len(ts))
	}
	for k, want := range map[int]bool{0: false, 1: false, 2: false, 3: true, 7: true, 11: true, 12: true} {
		if _, ok := s.Level(k); ok != want {
			t.Errorf("PRK Level(%d) ok = %v", k, ok)
		}
	}
	if lv, _ := s.Level(3); lv != 960 {
		t.Errorf("PRK Level(3) = %v, want 960", lv)
	}
	p, _ := NewScheduler(SchedulerConfig{ClassName: ClassPNDM, SkipPRKSteps: true, StepsOffset: 1}, 20)
	if ts := p.Timesteps(); len(ts) != 21 || ts[0] != 951 || ts[1] != 901 || ts[2] != 901 || ts[20] != 1 {
		t.Errorf("PLMS timesteps %v", ts)
	}
}

func TestSchedHeunKDPM2Timesteps(t *testing.T) {
	base := SchedulerConfig{BetaStart: ptr(1e-4), BetaEnd: ptr(0.02)}
	h := base
	h.ClassName = ClassHeunDiscrete
	s, _ := NewScheduler(h, 4)
	if ts := s.Timesteps(); len(ts) != 7 || ts[1] != ts[2] || ts[3] != ts[4] || ts[0] != 999 || ts[6] != 0 {
		t.Errorf("Heun timesteps %v", ts)
	}
	k := base
	k.ClassName = ClassKDPM2Discrete
	s, _ = NewScheduler(k, 4)
	ts := s.Timesteps()
	if len(ts) != 7 || ts[0] != 999 || ts[2] != 666 || ts[6] != 0 || !(ts[1] < 999 && ts[1] > 666) || !(ts[5] < 333 && ts[5] > 0) {
		t.Errorf("KDPM2 timesteps %v", ts)
	}
	if lv, ok := s.Level(1); !ok || lv != 666 {
		t.Errorf("KDPM2 Level(1) = %v %v, want 666", lv, ok)
	}
	if _, ok := s.Level(2); ok {
		t.Errorf("KDPM2 Level(2): a midpoint step reported ok")
	}
}
