package adm

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/nn"
	"github.com/ddpm-go/ddpm/weights"
)

// TestParamGradientsFiniteDifference checks the parameter gradients of
// nn.Net.VJP (L = <out, seed>) against central differences of the
// forward pass for parameters of every block kind the ADM networks add:
// GroupNorm with scale-shift (out_layers.0) and the embedding projection
// feeding it, the plain emb addition, average-pool and nearest up/down
// ResBlocks, fused qkv attention in both head orders, the attention
// pool (positional embedding, qkv_proj, c_proj), and the spatial heads'
// MLPs (ReLU, GroupNorm on (N, 2048)).
func TestParamGradientsFiniteDifference(t *testing.T) {
	cases := []struct {
		name, flags string
		pick        []string // substrings of the parameters checked
	}{
		{"unet-scaleshift-updown-new", "--image_size 8 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 --class_cond True --learn_sigma True --attention_resolutions 4 --num_head_channels 16 --resblock_updown True --use_new_attention_order True",
			[]string{"input_blocks.2.0.out_layers.0", "input_blocks.2.0.emb_layers", "input_blocks.3.1.qkv", "output_blocks.1.2.in_layers", "label_emb", "time_embed.0"}},
		{"unet-plain-legacy", "--image_size 8 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 --attention_resolutions 4 --num_heads 2 --use_scale_shift_norm False",
			[]string{"input_blocks.1.0.out_layers.0", "input_blocks.1.0.emb_layers", "input_blocks.3.1.qkv", "input_blocks.2.0.op", "output_blocks.1.1.conv"}},
		{"classifier-attention", "--image_size 64 --classifier_width 32 --classifier_depth 1 --classifier_attention_resolutions 32 --classifier_pool attention",
			[]string{"out.2.positional_embedding", "out.2.qkv_proj", "out.2.c_proj", "out.0", "middle_block.1.qkv"}},
		{"classifier-spatial", "--image_size 64 --classifier_width 32 --classifier_depth 1 --classifier_attention_resolutions 8 --classifier_pool spatial",
			[]string{"out.0", "out.2"}},
		{"classifier-spatial_v2", "--image_size 64 --classifier_width 32 --classifier_depth 1 --classifier_attention_resolutions 8 --classifier_pool spatial_v2",
			[]string{"out.1", "out.3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseFlags(tc.flags)
			if err != nil {
				t.Fatal(err)
			}
			m, err := New(cfg, newCPU(t), 3)
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
			r := rand.New(rand.NewPCG(11, 12))
			x := diffusion.NewBatch(2, 3, cfg.ImageSize, cfg.ImageSize)
			for i := range x.Data {
				x.Data[i] = float32(r.NormFloat64())
			}
			tt := []float64{5, 800}
			var y []int
			if cfg.ClassCond {
				y = []int{1, 999}
			}
			in, err := m.inputs(x, tt, y, nil)
			if err != nil {
				t.Fatal(err)
			}
			check := fdChecker(t, m.Engine(), Key(x), in, r)
			checked := 0
			for _, p := range m.Engine().Params() {
				want := false
				for _, s := range tc.pick {
					want = want || strings.HasPrefix(p.Name, s)
				}
				if !want {
					continue
				}
				check(p.Name, p.Offset+r.IntN(p.Size))
				checked++
			}
			if checked < len(tc.pick) {
				t.Fatalf("checked %d parameters for %d patterns", checked, len(tc.pick))
			}
		})
	}
}

// fdChecker runs one VJP of e at the given feeds with a random seed on
// the output and returns check, which compares the gradient of
// L = <output, seed> with respect to flat parameter i (named name in
// errors) with a central difference of the forward pass (h = 1e-2).
func fdChecker(t *testing.T, e *nn.Net[[]float32], k nn.Key, feeds map[string][]float32, r *rand.Rand) (check func(name string, i int)) {
	t.Helper()
	ctx := context.Background()
	size, err := e.OutputSize(k)
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]float32, size)
	for i := range seed {
		seed[i] = float32(r.NormFloat64())
	}
	if _, err := e.VJP(ctx, k, feeds, seed, []string{inputX}, true); err != nil {
		t.Fatal(err)
	}
	gb, _ := e.GradBuffer()
	grads := make([]float32, e.NumParams())
	copy(grads, gb)
	flat := make([]float32, e.NumParams())
	if err := e.ReadParams(flat); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, size)
	loss := func() float64 {
		if err := e.WriteParams(flat); err != nil {
			t.Fatal(err)
		}
		if err := e.Forward(ctx, k, feeds, out); err != nil {
			t.Fatal(err)
		}
		s := 0.0
		for i, v := range out {
			s += float64(v) * float64(seed[i])
		}
		return s
	}
	return func(name string, i int) {
		t.Helper()
		old := flat[i]
		const h = 1e-2
		flat[i] = old + h
		lp := loss()
		flat[i] = old - h
		lm := loss()
		flat[i] = old
		fd := (lp - lm) / (2 * h)
		g := float64(grads[i])
		// float32 network, float64 sums: abs 1e-3 + rel 3e-2.
		if math.Abs(g-fd) > 1e-3+3e-2*math.Max(math.Abs(g), math.Abs(fd)) {
			t.Errorf("%s (flat %d): gradient %.6g, finite difference %.6g", name, i, g, fd)
		}
	}
}
