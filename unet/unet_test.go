package unet

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/npy"
	"github.com/ddpm-go/ddpm/weights"
)

func fixtureDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join("..", "..", "shared", "fixtures", "diffusers-unet-small")
	if _, err := os.Stat(d); err != nil {
		t.Skipf("diffusers fixture not found at %s (it lives in the project's shared/ folder): %v", d, err)
	}
	return d
}

func newCPU(t testing.TB) *kernels.CPU {
	t.Helper()
	c, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

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

// fixtureCase reads the fixture's input batch, timesteps and diffusers'
// output.
func fixtureCase(t testing.TB, dir string) (diffusion.Batch, []float64, []float32) {
	t.Helper()
	xa, err := npy.ReadFile(filepath.Join(dir, "x.npy"))
	if err != nil {
		t.Fatal(err)
	}
	ta, err := npy.ReadFile(filepath.Join(dir, "timesteps.npy"))
	if err != nil {
		t.Fatal(err)
	}
	oa, err := npy.ReadFile(filepath.Join(dir, "out.npy"))
	if err != nil {
		t.Fatal(err)
	}
	x := diffusion.Batch{N: xa.Shape[0], C: xa.Shape[1], H: xa.Shape[2], W: xa.Shape[3], Data: xa.Float32s()}
	ts64, err := ta.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	ts := make([]float64, len(ts64))
	for i, v := range ts64 {
		ts[i] = float64(v)
	}
	return x, ts, oa.Float32s()
}

// TestFixture runs diffusers' own small UNet2DModel and compares with the
// output diffusers computed (relative L2 error < 1e-4).
func TestFixture(t *testing.T) {
	dir := fixtureDir(t)
	m, src, err := Load(dir, newCPU(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.NumParams(); got != 1112801 {
		t.Errorf("NumParams = %d, want 1112801", got)
	}
	if len(src.Tensors) != 182 {
		t.Errorf("fixture has %d tensors, want 182", len(src.Tensors))
	}
	x, ts, want := fixtureCase(t, dir)
	out, err := m.Predict(context.Background(), x, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := relL2(out.Data, want); e > 1e-4 {
		t.Fatalf("relative L2 error against diffusers = %.3g, want < 1e-4", e)
	} else {
		t.Logf("relative L2 error against diffusers: %.3g", e)
	}
}

// TestSaveLoad writes a model file and loads it back: same config, same
// tensors, same metadata.
func TestSaveLoad(t *testing.T) {
	cpu := newCPU(t)
	m, err := New(tinyConfig(), cpu, 3)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	meta := &weights.Model{ClassNames: []string{"a", "b", "c"}, DiffusionConfig: []byte(`{"timesteps":1000}`)}
	if err := m.Save(path, meta); err != nil {
		t.Fatal(err)
	}
	m2, src, err := Load(path, cpu)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(src.ClassNames, meta.ClassNames) || len(src.DiffusionConfig) == 0 {
		t.Errorf("metadata lost: classes %v, diffusion config %q", src.ClassNames, src.DiffusionConfig)
	}
	if m2.Config().NullClass == nil || *m2.Config().NullClass != 3 {
		t.Errorf("ddpm_null_class lost: %v", m2.Config().NullClass)
	}
	a, err := m.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	b, err := m2.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) {
		t.Fatalf("%d tensors saved, %d loaded", len(a), len(b))
	}
	for k, v := range a {
		if !slices.Equal(v.Data, b[k].Data) {
			t.Errorf("tensor %s differs after the round trip", k)
		}
	}
	// A wrong tensor set is one error naming every bad tensor.
	bad, _ := m.Tensors()
	delete(bad, "conv_in.weight")
	bad["extra.weight"] = weights.Tensor{Shape: []int{1}, Data: []float32{0}}
	bad["conv_out.bias"] = weights.Tensor{Shape: []int{5}, Data: make([]float32, 5)}
	err = m2.SetTensors(bad)
	if err == nil {
		t.Fatal("SetTensors accepted a wrong tensor set")
	}
	for _, name := range []string{"conv_in.weight", "extra.weight", "conv_out.bias"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}

// TestLoadEmbeddedDefault: unet.Load takes weights.DefaultPath like any
// --model source.
func TestLoadEmbeddedDefault(t *testing.T) {
	if _, err := weights.Default(); err != nil {
		t.Skip(err)
	}
	m, src, err := Load(weights.DefaultPath, newCPU(t))
	if err != nil {
		t.Fatalf("Load(%q): %v", weights.DefaultPath, err)
	}
	if src.Path != weights.DefaultPath || m.NumParams() != src.NumParams() {
		t.Fatalf("Load(%q): source %q, %d params vs %d", weights.DefaultPath, src.Path, m.NumParams(), src.NumParams())
	}
}
