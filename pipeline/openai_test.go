package pipeline

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/internal/fixtures"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/npy"
)

func readBatch(t *testing.T, path string) diffusion.Batch {
	t.Helper()
	a, err := npy.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return diffusion.Batch{N: a.Shape[0], C: a.Shape[1], H: a.Shape[2], W: a.Shape[3], Data: a.Float32s()}
}

// TestOpenOpenAI opens the openai-small UNet as its model.pt and as a
// converted model file: the same output as guided-diffusion's (rel L2
// under 1e-4), the diffusion of its flags (cosine, learned range), and
// the sampler-facing config fields; the classifier opens with a Model
// that refuses to predict.
func TestOpenOpenAI(t *testing.T) {
	dir := filepath.Join(fixtures.Dir(t, "openai-small"), "adm")
	ctx := context.Background()
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := adm.Load[[]float32](filepath.Join(dir, "model.pt"), "", cpu)
	if err != nil {
		t.Fatal(err)
	}
	conv := filepath.Join(t.TempDir(), "adm.safetensors")
	if err := m.Save(conv); err != nil {
		t.Fatal(err)
	}
	m.Close()
	x := readBatch(t, filepath.Join(dir, "x.npy"))
	want := readBatch(t, filepath.Join(dir, "out.npy"))
	for _, path := range []string{filepath.Join(dir, "model.pt"), conv} {
		p, err := Open(ctx, path, Options{Device: "cpu"})
		if err != nil {
			t.Fatal(err)
		}
		if p.OpenAI == nil || p.OpenAI.Kind() != adm.UNet {
			t.Fatalf("%s: OpenAI = %v", path, p.OpenAI)
		}
		if p.Config.InChannels != 3 || p.Config.OutChannels != 6 || p.Config.SampleSize != 64 || p.Classes() != 1000 {
			t.Errorf("%s: config %+v, classes %d", path, p.Config, p.Classes())
		}
		if c := p.Diffusion.Config(); p.Diffusion.T() != 1000 || c.Variance != diffusion.LearnedRange || c.Schedule.String() != "cosine" {
			t.Errorf("%s: diffusion %+v", path, c)
		}
		out, err := p.Model.Predict(ctx, x, []float64{10, 700}, []int{2, 9})
		if err != nil {
			t.Fatal(err)
		}
		var num, den float64
		for i := range want.Data {
			d := float64(out.Data[i] - want.Data[i])
			num += d * d
			den += float64(want.Data[i]) * float64(want.Data[i])
		}
		if e := math.Sqrt(num / den); e > 1e-4 {
			t.Errorf("%s: relative L2 %.3g", path, e)
		}
		p.Close()
	}
	p, err := Open(ctx, filepath.Join(fixtures.Dir(t, "openai-small"), "classifier", "model.pt"), Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.OpenAI == nil || p.OpenAI.Kind() != adm.Classifier || p.Classes() != 0 {
		t.Fatalf("classifier: OpenAI %v, classes %d", p.OpenAI, p.Classes())
	}
	if _, err := p.Model.Predict(ctx, x, []float64{1, 1}, nil); err == nil {
		t.Error("Predict on a classifier: no error")
	}
	if _, err := Open(ctx, filepath.Join(t.TempDir(), "missing.pt"), Options{Device: "cpu"}); err == nil {
		t.Error("missing .pt: no error")
	}
}

// TestClassifierGuidance guides the openai-small UNet with the
// openai-small classifier: the classifier opens (a UNet in its place is
// refused), its guidance is the log-probability gradient adm computes,
// and guided DDIM and DDPM runs raise the classifier's own log-probability
// of the asked class at the end of sampling over an unguided run from the
// same noise.
func TestClassifierGuidance(t *testing.T) {
	root := fixtures.Dir(t, "openai-small")
	ctx := context.Background()
	p, err := Open(ctx, filepath.Join(root, "adm", "model.pt"), Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := OpenClassifier(ctx, filepath.Join(root, "adm", "model.pt"), Options{Device: "cpu"}); err == nil {
		t.Error("a UNet as the classifier: no error")
	}
	cpath := filepath.Join(root, "classifier", "model.pt")
	c, err := OpenClassifier(ctx, cpath, Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Check(p); err != nil {
		t.Fatal(err)
	}
	x := readBatch(t, filepath.Join(root, "adm", "x.npy"))
	ts, ys := []float64{10, 700.5}, []int{2, 9}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ref, _, err := adm.Load[[]float32](cpath, "", cpu)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	want, err := adm.ClassifierGradient(ctx, ref, x, ts, ys, 1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Guidance(3, nil).Grad(ctx, x, ts, ys)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want.Data {
		if d := math.Abs(float64(got.Data[i] - want.Data[i])); d > 1e-6+1e-5*math.Abs(float64(want.Data[i])) {
			t.Fatalf("gradient value %d: %v, want %v", i, got.Data[i], want.Data[i])
		}
	}
	// log p(y | x_0) by the classifier at t = 0, summed over the batch.
	labels := []int{5, 5}
	logp := func(b diffusion.Batch) float64 {
		logits, err := c.Logits(ctx, b, []float64{0, 0})
		if err != nil {
			t.Fatal(err)
		}
		lp := adm.LogSoftmax(logits, c.Classes())
		return lp[labels[0]] + lp[c.Classes()+labels[1]]
	}
	for _, sampler := range []diffusion.Sampler{diffusion.SamplerDDIM, diffusion.SamplerDDPM} {
		o := diffusion.Options{Sampler: sampler, Steps: 2, Seed: 1, N: 2, C: 3, H: 64, W: 64, Labels: []int{1, 7}}
		plain, err := p.Diffusion.Sample(ctx, p.Model, o)
		if err != nil {
			t.Fatal(err)
		}
		o.Classifier = c.Guidance(100, labels)
		guided, err := p.Diffusion.Sample(ctx, p.Model, o)
		if err != nil {
			t.Fatal(err)
		}
		lp0, lp1 := logp(plain), logp(guided)
		t.Logf("%s: log p(y=5 | x_0) summed over 2 images: %.3f unguided, %.3f guided (scale 100)", sampler, lp0, lp1)
		if !(lp1 > lp0) {
			t.Errorf("%s: guidance did not raise the classifier's log-probability (%v -> %v)", sampler, lp0, lp1)
		}
	}
}
