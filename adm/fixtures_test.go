package adm

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/internal/fixtures"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/npy"
)

// The shared openai-small fixtures: networks built, saved (model.pt +
// args.json) and run by openai/guided-diffusion at 22e0df8 on PyTorch
// 1.13 (float32, CPU), with their inputs and outputs; see
// ../shared/fixtures/README.md. Every output must match to a relative L2
// error under 1e-4 (measured: see the test logs).
const fixtureTol = 1e-4

func newCPU(t testing.TB) *kernels.CPU {
	t.Helper()
	c, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// relL2 is ||got - want|| / ||want||.
func relL2(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return notNaN(math.Sqrt(num / den))
}

// notNaN is e, or +Inf where e is NaN (a NaN in the output under test), so
// that no "e > tol" check passes a NaN.
func notNaN(e float64) float64 {
	if math.IsNaN(e) {
		return math.Inf(1)
	}
	return e
}

// fixture is one openai-small folder's arrays.
type fixture struct {
	dir    string
	x      diffusion.Batch
	t      []float64
	labels []int
}

func loadFixture(t *testing.T, name string) fixture {
	t.Helper()
	dir := filepath.Join(fixtures.Dir(t, "openai-small"), name)
	a := readNPY(t, filepath.Join(dir, "x.npy"))
	f := fixture{dir: dir, x: diffusion.Batch{N: a.Shape[0], C: a.Shape[1], H: a.Shape[2], W: a.Shape[3], Data: a.Float32s()}}
	ts, err := readNPY(t, filepath.Join(dir, "timesteps.npy")).Int64s()
	if err != nil {
		t.Fatal(err)
	}
	ys, err := readNPY(t, filepath.Join(dir, "class_labels.npy")).Int64s()
	if err != nil {
		t.Fatal(err)
	}
	for i := range ts {
		f.t = append(f.t, float64(ts[i]))
		f.labels = append(f.labels, int(ys[i]))
	}
	return f
}

func readNPY(t *testing.T, path string) *npy.Array {
	t.Helper()
	a, err := npy.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func loadModel(t *testing.T, dir string) *Model {
	t.Helper()
	path := filepath.Join(dir, "model.pt")
	cfg, from, err := ConfigFor(path, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("config from %s: %s", from, cfg.Kind)
	m, err := LoadCheckpoint[[]float32](path, cfg, newCPU(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// TestFixtureADM: guided-diffusion's UNetModel (64x64, class-conditional,
// learned sigma, scale-shift norm, resblock up/down, new attention
// order, 16-channel heads, channel_mult 1,2,2).
func TestFixtureADM(t *testing.T) {
	f := loadFixture(t, "adm")
	m := loadModel(t, f.dir)
	want := readNPY(t, filepath.Join(f.dir, "out.npy"))
	out, err := m.Predict(context.Background(), f.x, f.t, f.labels)
	if err != nil {
		t.Fatal(err)
	}
	if out.N != want.Shape[0] || out.C != want.Shape[1] || out.H != want.Shape[2] || out.W != want.Shape[3] {
		t.Fatalf("output (%d,%d,%d,%d), want %v", out.N, out.C, out.H, out.W, want.Shape)
	}
	e := relL2(out.Data, want.Float32s())
	t.Logf("ADM UNet out: relative L2 %.3g", e)
	if e > fixtureTol {
		t.Fatalf("relative L2 error %.3g > %g", e, fixtureTol)
	}
}

// TestFixtureClassifier: guided-diffusion's EncoderUNetModel (64x64,
// width 64, depth 1, attention pooling): the logits and the guidance
// gradient d/dx sum_i log p(y_i | x_i, t_i).
func TestFixtureClassifier(t *testing.T) {
	f := loadFixture(t, "classifier")
	m := loadModel(t, f.dir)
	ctx := context.Background()
	logits, err := m.Logits(ctx, f.x, f.t)
	if err != nil {
		t.Fatal(err)
	}
	e := relL2(logits, readNPY(t, filepath.Join(f.dir, "logits.npy")).Float32s())
	t.Logf("classifier logits: relative L2 %.3g", e)
	if e > fixtureTol {
		t.Fatalf("logits: relative L2 error %.3g > %g", e, fixtureTol)
	}
	g, err := ClassifierGradient(ctx, m, f.x, f.t, f.labels, 1)
	if err != nil {
		t.Fatal(err)
	}
	e = relL2(g.Data, readNPY(t, filepath.Join(f.dir, "grad_log_p.npy")).Float32s())
	t.Logf("classifier grad_log_p: relative L2 %.3g", e)
	if e > fixtureTol {
		t.Fatalf("grad_log_p: relative L2 error %.3g > %g", e, fixtureTol)
	}
	// The scale multiplies the gradient.
	g2, err := ClassifierGradient(ctx, m, f.x, f.t, f.labels, 2.5)
	if err != nil {
		t.Fatal(err)
	}
	for i := range g.Data {
		if d := math.Abs(float64(g2.Data[i]) - 2.5*float64(g.Data[i])); d > 1e-6*(1+math.Abs(float64(g2.Data[i]))) {
			t.Fatalf("scale 2.5: grad[%d] = %v, want %v", i, g2.Data[i], 2.5*g.Data[i])
		}
	}
}

// TestFixtureConvert saves the fixture UNet as a ddpm model file and reads
// it back: same config, same output bit for bit.
func TestFixtureConvert(t *testing.T) {
	f := loadFixture(t, "adm")
	m := loadModel(t, f.dir)
	path := filepath.Join(t.TempDir(), "adm.safetensors")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	m2, src, err := Load[[]float32](path, "", newCPU(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if string(m2.Config().JSON()) != string(m.Config().JSON()) {
		t.Fatalf("config after save/load:\n%s\nwant\n%s", m2.Config().JSON(), m.Config().JSON())
	}
	if len(src.DiffusionConfig) == 0 {
		t.Fatal("converted file has no diffusion config")
	}
	ctx := context.Background()
	a, err := m.Predict(ctx, f.x, f.t, f.labels)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m2.Predict(ctx, f.x, f.t, f.labels)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.Data {
		if a.Data[i] != b.Data[i] {
			t.Fatalf("output[%d] %v after save/load, want %v", i, b.Data[i], a.Data[i])
		}
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}
