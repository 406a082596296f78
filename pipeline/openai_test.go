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

// TestGuideWithClassifier wraps the openai-small UNet with the
// openai-small classifier: the guided prediction is eps - sqrt(1 -
// alphabar_t) * scale * grad_x log p(y | x_t, t), computed here from the
// two networks directly, and a short guided DDIM run works.
func TestGuideWithClassifier(t *testing.T) {
	root := fixtures.Dir(t, "openai-small")
	ctx := context.Background()
	p, err := Open(ctx, filepath.Join(root, "adm", "model.pt"), Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	x := readBatch(t, filepath.Join(root, "adm", "x.npy"))
	ts, ys := []float64{10, 700.5}, []int{2, 9}
	plain, err := p.Model.Predict(ctx, x, ts, ys)
	if err != nil {
		t.Fatal(err)
	}
	if err := GuideWithClassifier(ctx, p, filepath.Join(root, "adm", "model.pt"), 1, nil, Options{Device: "cpu"}); err == nil {
		t.Error("a UNet as the classifier: no error")
	}
	const scale = 3
	cpath := filepath.Join(root, "classifier", "model.pt")
	if err := GuideWithClassifier(ctx, p, cpath, scale, nil, Options{Device: "cpu"}); err != nil {
		t.Fatal(err)
	}
	guided, err := p.Model.Predict(ctx, x, ts, ys)
	if err != nil {
		t.Fatal(err)
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := adm.Load[[]float32](cpath, "", cpu)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g, err := adm.ClassifierGradient(ctx, c, x, ts, ys, scale)
	if err != nil {
		t.Fatal(err)
	}
	abar := p.Diffusion.Schedule().AlphasCumprod
	plane := 3 * 64 * 64
	for i := range 2 {
		ab := abar[int(ts[i])]
		if f := ts[i] - math.Floor(ts[i]); f > 0 {
			ab = (1-f)*ab + f*abar[int(ts[i])+1]
		}
		for j := 0; j < 2*plane; j++ {
			want := float64(plain.Data[i*2*plane+j])
			if j < plane {
				want -= math.Sqrt(1-ab) * float64(g.Data[i*plane+j])
			}
			if d := math.Abs(float64(guided.Data[i*2*plane+j]) - want); d > 1e-5+1e-5*math.Abs(want) {
				t.Fatalf("example %d value %d: guided %v, want %v", i, j, guided.Data[i*2*plane+j], want)
			}
		}
	}
	out, err := p.Diffusion.Sample(ctx, p.Model, diffusion.Options{Steps: 2, Seed: 1, N: 1, C: 3, H: 64, W: 64, Labels: []int{5}})
	if err != nil {
		t.Fatal(err)
	}
	if out.N != 1 || len(out.Data) != plane {
		t.Fatalf("sample %+v", out)
	}
}
