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
