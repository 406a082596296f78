package adm

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/weights"
)

// TestGLIDEDevice runs a small GLIDE inpainting model without and with a
// transformer block (text embeddings with padding, final LayerNorm,
// transformer_proj, encoder_kv attention, and with the block its
// attention and GELU MLP) on the CPU and on cuda.Device (a GPU, or the
// CPU emulator of package cudatest) in strict fp32: outputs agree within
// abs 1e-5 + rel 1e-3.
func TestGLIDEDevice(t *testing.T) {
	gpu, err := cuda.Open(0, cuda.Options{Precision: "fp32"})
	if err != nil {
		t.Skipf("no GPU or emulator: %v", err)
	}
	defer gpu.Close()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 6))
	for _, layers := range []string{"0", "1"} {
		t.Run("xf_layers="+layers, func(t *testing.T) {
			cfg, err := ParseFlags(strings.Replace(tinyGlide, "--xf_layers 1", "--xf_layers "+layers, 1) + " --inpaint True")
			if err != nil {
				t.Fatal(err)
			}
			cm, err := New(cfg, newCPU(t), 1)
			if err != nil {
				t.Fatal(err)
			}
			defer cm.Close()
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
			x, img, mk := diffusion.NewBatch(2, 3, 8, 8), diffusion.NewBatch(2, 3, 8, 8), diffusion.NewBatch(2, 1, 8, 8)
			for i := range x.Data {
				x.Data[i], img.Data[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
			}
			for i := range mk.Data {
				mk.Data[i] = float32(r.IntN(2))
			}
			toks, mask, err := cm.Tokenize([]string{"a red", ""})
			if err != nil {
				t.Fatal(err)
			}
			in := TextInputs{Tokens: toks, Mask: mask, InpaintImage: &img, InpaintMask: &mk}
			tt := []float64{3, 612.5}
			oc, err := cm.PredictText(ctx, x, tt, in)
			if err != nil {
				t.Fatal(err)
			}
			og, err := gm.PredictText(ctx, x, tt, in)
			if err != nil {
				t.Fatal(err)
			}
			nearly(t, "out", og.Data, oc.Data, 1e-5, 1e-3)
		})
	}
}
