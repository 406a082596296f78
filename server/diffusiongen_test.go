package server

import (
	"bytes"
	"context"
	"errors"
	"image"
	"strings"
	"sync"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
)

// toyModel is a tiny row-wise "network": eps = 0.1 x + 1e-4 t + 0.05 y
// (y = -1 for the null class), recording the batch size of every call.
type toyModel struct {
	mu    sync.Mutex
	sizes []int
	// after, when set, is called after each call with the call count.
	after func(calls int)
}

func (m *toyModel) Predict(_ context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
	out := diffusion.NewBatch(x.N, x.C, x.H, x.W)
	d := x.C * x.H * x.W
	for r := 0; r < x.N; r++ {
		yv := 0.0
		if y != nil {
			yv = float64(y[r])
		}
		for i := 0; i < d; i++ {
			out.Data[r*d+i] = float32(0.1*float64(x.Data[r*d+i]) + 1e-4*float64(t[r]) + 0.05*yv)
		}
	}
	m.mu.Lock()
	m.sizes = append(m.sizes, x.N)
	n := len(m.sizes)
	m.mu.Unlock()
	if m.after != nil {
		m.after(n)
	}
	return out, nil
}

func newToyGen(t *testing.T, classes int) (*DiffusionGenerator, *toyModel) {
	t.Helper()
	d, err := diffusion.New(diffusion.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	m := &toyModel{}
	var names []string
	if classes > 0 {
		names = digits[:classes]
	}
	g, err := NewDiffusionGenerator(m, d, ModelInfo{Name: "toy", ImageSize: 4, Channels: 1, NumClasses: classes, ClassNames: names, Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	return g, m
}

func pix(t *testing.T, im image.Image) []byte {
	t.Helper()
	g, ok := im.(*image.Gray)
	if !ok {
		t.Fatalf("image is %T, want *image.Gray", im)
	}
	return g.Pix
}

// TestDiffusionGeneratorBatchIndependent: an image depends on its seed and
// settings only, not on the rest of its batch; the model runs once per step
// on the whole batch.
func TestDiffusionGeneratorBatchIndependent(t *testing.T) {
	for _, set := range []Settings{{Steps: 5, Sampler: diffusion.SamplerDDPM}, {Steps: 5, Sampler: diffusion.SamplerDDIM, Eta: 0.5}, {Steps: 4, Sampler: diffusion.SamplerDDIM}} {
		t.Run(set.Sampler.String(), func(t *testing.T) {
			g, m := newToyGen(t, 0)
			items := []Item{{Seed: 1, Class: -1}, {Seed: 2, Class: -1}, {Seed: 3, Class: -1}}
			var steps []int
			all, err := g.Generate(context.Background(), set, items, func(step, total int) {
				steps = append(steps, step)
				if total != set.Steps {
					t.Errorf("total %d, want %d", total, set.Steps)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(m.sizes) != set.Steps || m.sizes[0] != 3 {
				t.Errorf("model calls %v, want %d calls of 3 rows", m.sizes, set.Steps)
			}
			if len(steps) != set.Steps || steps[len(steps)-1] != set.Steps {
				t.Errorf("progress %v", steps)
			}
			alone, err := g.Generate(context.Background(), set, items[1:2], nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pix(t, all[1]), pix(t, alone[0])) {
				t.Error("seed 2 gave different pixels alone and in a batch")
			}
			if bytes.Equal(pix(t, all[0]), pix(t, all[1])) {
				t.Error("seeds 1 and 2 gave the same image")
			}
			// Reference: diffusion.Sample directly with the seed.
			ref, err := g.diff.Sample(context.Background(), &toyModel{}, diffusion.Options{Sampler: set.Sampler,
				Steps: set.Steps, Eta: set.Eta, Seed: 3, N: 1, C: 1, H: 4, W: 4})
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range ref.Data {
				want := byte(0)
				if f := (float64(v) + 1) * 127.5; f >= 255 {
					want = 255
				} else if f > 0 {
					want = byte(f + 0.5)
				}
				if d := int(pix(t, all[2])[i]) - int(want); d < -1 || d > 1 {
					t.Fatalf("pixel %d: %d, direct Sample gives %d", i, pix(t, all[2])[i], want)
				}
			}
		})
	}
}

func TestDiffusionGeneratorGuidance(t *testing.T) {
	g, m := newToyGen(t, 3)
	set := Settings{Steps: 3, Sampler: diffusion.SamplerDDIM, Guidance: 2}
	imgs, err := g.Generate(context.Background(), set, []Item{{Seed: 1, Class: 2}, {Seed: 1, Class: 0}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.sizes[0] != 4 {
		t.Errorf("model saw %d rows, want 4 (conditional and null rows of 2 images)", m.sizes[0])
	}
	if bytes.Equal(pix(t, imgs[0]), pix(t, imgs[1])) {
		t.Error("classes 2 and 0 gave the same image")
	}
}

// TestDiffusionGeneratorDropItem: an item cancelled mid-run leaves the
// batch (the model sees fewer rows from then on), gets no image, and the
// others' images are unchanged.
func TestDiffusionGeneratorDropItem(t *testing.T) {
	g, m := newToyGen(t, 0)
	set := Settings{Steps: 8, Sampler: diffusion.SamplerDDPM}
	done := make(chan struct{})
	m.after = func(calls int) {
		if calls == 3 {
			close(done)
		}
	}
	items := []Item{{Seed: 1, Class: -1}, {Seed: 2, Class: -1, Done: done}, {Seed: 3, Class: -1}}
	imgs, err := g.Generate(context.Background(), set, items, nil)
	if err != nil {
		t.Fatal(err)
	}
	if imgs[1] != nil || imgs[0] == nil || imgs[2] == nil {
		t.Fatalf("images %v", imgs)
	}
	if m.sizes[0] != 3 || m.sizes[len(m.sizes)-1] != 2 || len(m.sizes) != set.Steps {
		t.Errorf("batch sizes %v: want 3 then 2, %d calls", m.sizes, set.Steps)
	}
	g2, _ := newToyGen(t, 0)
	ref, err := g2.Generate(context.Background(), set, []Item{items[0], items[2]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pix(t, ref[0]), pix(t, imgs[0])) || !bytes.Equal(pix(t, ref[1]), pix(t, imgs[2])) {
		t.Error("the other images changed when an item left")
	}
}

func TestDiffusionGeneratorCancel(t *testing.T) {
	g, m := newToyGen(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	m.after = func(calls int) {
		if calls == 2 {
			cancel()
		}
	}
	_, err := g.Generate(ctx, Settings{Steps: 50, Sampler: diffusion.SamplerDDPM}, []Item{{Seed: 1, Class: -1}, {Seed: 2, Class: -1}}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if len(m.sizes) > 3 {
		t.Errorf("%d model calls after cancel at 2", len(m.sizes))
	}
}

type failModel struct{}

func (failModel) Predict(context.Context, diffusion.Batch, []float64, []int) (diffusion.Batch, error) {
	return diffusion.Batch{}, errors.New("out of memory")
}

type panicModel struct{}

func (panicModel) Predict(context.Context, diffusion.Batch, []float64, []int) (diffusion.Batch, error) {
	panic("kernel bug")
}

func TestDiffusionGeneratorModelErrors(t *testing.T) {
	d, _ := diffusion.New(diffusion.DefaultConfig())
	for name, m := range map[string]diffusion.Model{"error": failModel{}, "panic": panicModel{}} {
		t.Run(name, func(t *testing.T) {
			g, err := NewDiffusionGenerator(m, d, ModelInfo{Name: "x", ImageSize: 2, Channels: 1, Device: "cpu"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := g.Generate(context.Background(), Settings{Steps: 2, Sampler: diffusion.SamplerDDPM}, []Item{{Seed: 1, Class: -1}, {Seed: 2, Class: -1}}, nil); err == nil {
				t.Fatal("no error")
			}
		})
	}
	if _, err := NewDiffusionGenerator(nil, d, ModelInfo{}); err == nil {
		t.Error("nil model accepted")
	}
}

// TestDiffusionGeneratorServer runs the toy model behind the HTTP server:
// the same seed gives the same bytes whether batched or not.
func TestDiffusionGeneratorServer(t *testing.T) {
	g, _ := newToyGen(t, 10)
	s := newTest(t, g, Options{})
	body := `{"n":3,"steps":4,"seed":11,"sampler":"ddim","guidance_scale":1.5}`
	a := decodeImages(t, do(t, s.Handler(), "POST", "/v1/images/generations", body).Body.Bytes())
	b := decodeImages(t, do(t, s.Handler(), "POST", "/v1/images/generations", `{"n":1,"steps":4,"seed":12,"sampler":"ddim","guidance_scale":1.5}`).Body.Bytes())
	if len(a.Data) != 3 || a.Data[1].B64JSON != b.Data[0].B64JSON || *a.Data[1].ClassLabel != *b.Data[0].ClassLabel {
		t.Error("seed 12 differs between a batch of 3 and a batch of 1")
	}
}

// TestDiffusionGeneratorClassifier: with a classifier set, classifier_scale
// guides each image towards its class (the guide sees the image's class
// and the scale) and changes the image; /v1/models names the classifier;
// without one, or on an unconditional model, classifier_scale is refused.
func TestDiffusionGeneratorClassifier(t *testing.T) {
	g, _ := newToyGen(t, 10)
	var mu sync.Mutex
	seen := map[[2]float64]bool{}
	guide := func(scale float64, labels []int) *diffusion.ClassifierGuidance {
		grad := func(_ context.Context, x diffusion.Batch, _ []float64, y []int) (diffusion.Batch, error) {
			mu.Lock()
			seen[[2]float64{scale, float64(y[0])}] = true
			mu.Unlock()
			out := diffusion.NewBatch(x.N, x.C, x.H, x.W)
			for i := range out.Data {
				out.Data[i] = 1
			}
			return out, nil
		}
		return &diffusion.ClassifierGuidance{Grad: grad, Scale: scale, Labels: labels}
	}
	plainSrv := newTest(t, g, Options{})
	if w := do(t, plainSrv.Handler(), "POST", "/v1/images/generations", `{"classifier_scale":2}`); w.Code != 422 || !strings.Contains(w.Body.String(), "classifier_scale") {
		t.Errorf("classifier_scale without a classifier: %d %s", w.Code, w.Body)
	}
	g2, _ := newToyGen(t, 10)
	if err := g2.SetClassifier("clf", guide); err != nil {
		t.Fatal(err)
	}
	s := newTest(t, g2, Options{})
	body := func(scale string) string {
		return `{"n":1,"steps":4,"seed":5,"sampler":"ddpm","class_label":3,"classifier_scale":` + scale + `}`
	}
	plain := decodeImages(t, do(t, s.Handler(), "POST", "/v1/images/generations", body("0")).Body.Bytes())
	guided := decodeImages(t, do(t, s.Handler(), "POST", "/v1/images/generations", body("2.5")).Body.Bytes())
	if len(plain.Data) != 1 || len(guided.Data) != 1 || plain.Data[0].B64JSON == guided.Data[0].B64JSON {
		t.Error("classifier_scale 2.5 gave the image of scale 0")
	}
	if !seen[[2]float64{2.5, 3}] || len(seen) != 1 {
		t.Errorf("the guide saw (scale, class) %v, want only (2.5, 3)", seen)
	}
	if w := do(t, s.Handler(), "POST", "/v1/images/generations", body("21")); w.Code != 422 {
		t.Errorf("classifier_scale 21: %d", w.Code)
	}
	if w := do(t, s.Handler(), "GET", "/v1/models", ""); !strings.Contains(w.Body.String(), `"classifier":"clf"`) {
		t.Errorf("/v1/models: %s", w.Body)
	}
	uncond, _ := newToyGen(t, 0)
	if err := uncond.SetClassifier("clf", guide); err == nil {
		t.Error("a classifier on an unconditional model: no error")
	}
}

// TestDiffusionInfoDefaults: an unset default sampler and step count come
// from the process (ddpm at 100 steps for a learned variance, ddim at 50
// otherwise); set ones are kept.
func TestDiffusionInfoDefaults(t *testing.T) {
	learned := diffusion.DefaultConfig()
	learned.Variance = diffusion.LearnedRange
	for _, c := range []struct {
		cfg     diffusion.Config
		in      ModelInfo
		sampler string
		steps   int
	}{
		{diffusion.DefaultConfig(), ModelInfo{}, "ddim", 50},
		{learned, ModelInfo{}, "ddpm", 100},
		{learned, ModelInfo{DefaultSampler: "dpm++2m", DefaultSteps: 20}, "dpm++2m", 20},
	} {
		d, err := diffusion.New(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.in.Name, c.in.ImageSize, c.in.Channels, c.in.Device = "x", 2, 1, "cpu"
		info, err := DiffusionInfo(d, c.in)
		if err != nil {
			t.Fatal(err)
		}
		if info.DefaultSampler != c.sampler || info.DefaultSteps != c.steps {
			t.Errorf("%v: default %s at %d steps, want %s at %d", c.cfg.Variance, info.DefaultSampler, info.DefaultSteps, c.sampler, c.steps)
		}
	}
}

// TestDiffusionGeneratorProgressCountsSteps: samplers that call the model
// more than once per step (Heun, dpm2, PNDM's warm-up) still report the
// request's steps: increasing, out of s.Steps, ending at s.Steps.
func TestDiffusionGeneratorProgressCountsSteps(t *testing.T) {
	for _, sm := range []diffusion.Sampler{diffusion.SamplerHeun, diffusion.SamplerDPM2, diffusion.SamplerPNDM} {
		t.Run(sm.String(), func(t *testing.T) {
			g, m := newToyGen(t, 0)
			set := Settings{Steps: 6, Sampler: sm}
			var steps []int
			if _, err := g.Generate(context.Background(), set, []Item{{Seed: 1, Class: -1}}, func(step, total int) {
				steps = append(steps, step)
				if total != set.Steps {
					t.Errorf("total %d, want the request's %d steps", total, set.Steps)
				}
			}); err != nil {
				t.Fatal(err)
			}
			if len(m.sizes) <= set.Steps {
				t.Fatalf("%d model calls for %d steps: want more (the case under test)", len(m.sizes), set.Steps)
			}
			for i := 1; i < len(steps); i++ {
				if steps[i] <= steps[i-1] {
					t.Errorf("progress %v does not increase", steps)
				}
			}
			if len(steps) == 0 || steps[len(steps)-1] != set.Steps {
				t.Errorf("progress %v: want it to end at %d", steps, set.Steps)
			}
		})
	}
}
