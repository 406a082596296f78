package adm

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/weights"
)

// near reports the first element of got outside abs + rel*|want|.
func nearly(t *testing.T, name string, got, want []float32, abs, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i]) - float64(want[i])); !(d <= abs+rel*math.Abs(float64(want[i]))) {
			t.Fatalf("%s[%d] = %v on the GPU, %v on the CPU (|diff| %.3g > %g + %g|cpu|)", name, i, got[i], want[i], d, abs, rel)
		}
	}
	t.Logf("%s: GPU vs CPU relative L2 %.3g", name, relL2(got, want))
}

// TestDevice runs an ADM UNet (class-conditional, learned sigma,
// scale-shift norm, resblock up/down, new-order attention) and a
// classifier (legacy-order attention, attention pool) on the CPU and on
// cuda.Device (a GPU, or the CPU emulator of package cudatest) in strict
// fp32 with the same weights: the UNet output, the logits and the
// guidance gradient agree within abs 1e-5 + rel 1e-3 elementwise.
func TestDevice(t *testing.T) {
	gpu, err := cuda.Open(0, cuda.Options{Precision: "fp32"})
	if err != nil {
		t.Skipf("no GPU or emulator: %v", err)
	}
	defer gpu.Close()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 4))
	randn := func(b diffusion.Batch) diffusion.Batch {
		for i := range b.Data {
			b.Data[i] = float32(r.NormFloat64())
		}
		return b
	}
	for _, tc := range []struct{ name, flags string }{
		{"unet", "--image_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 --class_cond True --learn_sigma True --attention_resolutions 16,8 --num_head_channels 16 --use_scale_shift_norm True --resblock_updown True --use_new_attention_order True"},
		{"classifier", "--image_size 64 --classifier_width 32 --classifier_depth 1 --classifier_attention_resolutions 32 --classifier_pool attention"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "classifier" && testing.Short() {
				t.Skip("the 64x64 classifier takes 15 s on the CPU emulator; skipped in -short")
			}
			cfg, err := ParseFlags(tc.flags)
			if err != nil {
				t.Fatal(err)
			}
			cm, err := New(cfg, newCPU(t), 1)
			if err != nil {
				t.Fatal(err)
			}
			defer cm.Close()
			// Random weights everywhere (no zero-initialised layers).
			ts := map[string]weights.Tensor{}
			for k, s := range cm.Shapes() {
				ts[k] = weights.Tensor{Shape: s, Data: detValues(k, s)}
			}
			if err := cm.SetTensors(ts); err != nil {
				t.Fatal(err)
			}
			gm, err := NewOn[cuda.Ptr](cfg, gpu, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer gm.Close()
			if err := gm.SetTensors(ts); err != nil {
				t.Fatal(err)
			}
			x := randn(diffusion.NewBatch(2, 3, cfg.ImageSize, cfg.ImageSize))
			tt, y := []float64{3, 612.5}, []int{7, 420}
			if cfg.Kind == Classifier {
				gc, lc, err := cm.LogProbGradient(ctx, x, tt, y)
				if err != nil {
					t.Fatal(err)
				}
				gg, lg, err := gm.LogProbGradient(ctx, x, tt, y)
				if err != nil {
					t.Fatal(err)
				}
				nearly(t, "logits", lg, lc, 1e-5, 1e-3)
				nearly(t, "grad", gg.Data, gc.Data, 1e-5, 1e-3)
				return
			}
			oc, err := cm.Predict(ctx, x, tt, y)
			if err != nil {
				t.Fatal(err)
			}
			og, err := gm.Predict(ctx, x, tt, y)
			if err != nil {
				t.Fatal(err)
			}
			nearly(t, "out", og.Data, oc.Data, 1e-5, 1e-3)
		})
	}
}
