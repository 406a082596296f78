package adm

import (
	"context"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/weights"
)

// detValues is pytorch/adm_cases.py's det_values: u in [0, 1) from a
// splitmix64 hash of (fnv1a64(name), i), mapped to +-1/sqrt(fan_in) for
// tensors of rank >= 2, 1 +- 0.1 for rank-1 ".weight" and +-0.1 for other
// rank-1 tensors; float64 rounded to float32 as torch's copy_ does.
func detValues(name string, shape []int) []float32 {
	h := fnv.New64a()
	h.Write([]byte(name))
	seed := h.Sum64()
	n := 1
	for _, s := range shape {
		n *= s
	}
	scale, offset := 0.1, 0.0
	switch {
	case len(shape) >= 2:
		scale = 1 / math.Sqrt(float64(n/shape[0]))
	case len(name) > 7 && name[len(name)-7:] == ".weight":
		offset = 1
	}
	out := make([]float32, n)
	for i := range out {
		z := seed + uint64(i+1)*0x9E3779B97F4A7C15
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		z ^= z >> 31
		u := float64(z>>11) / float64(uint64(1)<<53)
		out[i] = float32(offset + scale*(2*u-1))
	}
	return out
}

// TestCases checks the networks of adm/testdata (written by
// pytorch/adm_cases.py with guided-diffusion's own code: the flags the
// openai-small fixtures leave out) to a relative L2 error under 1e-4.
func TestCases(t *testing.T) {
	for _, name := range []string{"unet-legacy", "unet-classcond", "superres", "classifier-adaptive", "classifier-spatial", "classifier-spatial_v2"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", name)
			b, err := os.ReadFile(filepath.Join(dir, "args.json"))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := ParseArgs(b)
			if err != nil {
				t.Fatal(err)
			}
			m, err := New(cfg, newCPU(t), 1)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ts := map[string]weights.Tensor{}
			for k, s := range m.Shapes() {
				ts[k] = weights.Tensor{Shape: s, Data: detValues(k, s)}
			}
			if err := m.SetTensors(ts); err != nil {
				t.Fatal(err)
			}
			a := readNPY(t, filepath.Join(dir, "x.npy"))
			x := diffusion.Batch{N: a.Shape[0], C: a.Shape[1], H: a.Shape[2], W: a.Shape[3], Data: a.Float32s()}
			tt := readNPY(t, filepath.Join(dir, "t.npy")).Float64s()
			var y []int
			if _, err := os.Stat(filepath.Join(dir, "y.npy")); err == nil {
				ys, err := readNPY(t, filepath.Join(dir, "y.npy")).Int64s()
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range ys {
					y = append(y, int(v))
				}
			}
			want := readNPY(t, filepath.Join(dir, "out.npy")).Float32s()
			ctx := context.Background()
			var got []float32
			switch cfg.Kind {
			case Classifier:
				if got, err = m.Logits(ctx, x, tt); err != nil {
					t.Fatal(err)
				}
				g, err := ClassifierGradient(ctx, m, x, tt, y, 1)
				if err != nil {
					t.Fatal(err)
				}
				e := relL2(g.Data, readNPY(t, filepath.Join(dir, "grad.npy")).Float32s())
				t.Logf("%s grad: relative L2 %.3g", name, e)
				if e > fixtureTol {
					t.Errorf("grad: relative L2 %.3g > %g", e, fixtureTol)
				}
			case SuperRes:
				l := readNPY(t, filepath.Join(dir, "low_res.npy"))
				low := diffusion.Batch{N: l.Shape[0], C: l.Shape[1], H: l.Shape[2], W: l.Shape[3], Data: l.Float32s()}
				wm, err := m.WithLowRes(low)
				if err != nil {
					t.Fatal(err)
				}
				out, err := wm.Predict(ctx, x, tt, y)
				if err != nil {
					t.Fatal(err)
				}
				got = out.Data
			default:
				out, err := m.Predict(ctx, x, tt, y)
				if err != nil {
					t.Fatal(err)
				}
				got = out.Data
			}
			if len(got) != len(want) {
				t.Fatalf("%d outputs, want %d", len(got), len(want))
			}
			e := relL2(got, want)
			t.Logf("%s out: relative L2 %.3g", name, e)
			if e > fixtureTol {
				t.Fatalf("relative L2 %.3g > %g", e, fixtureTol)
			}
		})
	}
}

// TestFP16Checkpoint loads adm/testdata/fp16/model.pt, saved by a
// use_fp16 UNetModel after its own convert_to_fp16() (float16 torso,
// float32 embedding and output layers): the float16 tensors are widened
// and the output matches guided-diffusion's float32 model on the same
// rounded weights.
func TestFP16Checkpoint(t *testing.T) {
	dir := filepath.Join("testdata", "fp16")
	m, src, err := Load[[]float32](filepath.Join(dir, "model.pt"), "", newCPU(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !m.Config().UseFP16 || len(src.Tensors) != 88 {
		t.Fatalf("use_fp16 %v, %d tensors", m.Config().UseFP16, len(src.Tensors))
	}
	a := readNPY(t, filepath.Join(dir, "x.npy"))
	x := diffusion.Batch{N: a.Shape[0], C: a.Shape[1], H: a.Shape[2], W: a.Shape[3], Data: a.Float32s()}
	out, err := m.Predict(context.Background(), x, readNPY(t, filepath.Join(dir, "t.npy")).Float64s(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := relL2(out.Data, readNPY(t, filepath.Join(dir, "out.npy")).Float32s())
	t.Logf("fp16 checkpoint out: relative L2 %.3g", e)
	if e > fixtureTol {
		t.Fatalf("relative L2 %.3g > %g", e, fixtureTol)
	}
}
