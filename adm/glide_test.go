package adm

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/internal/fixtures"
	"github.com/ddpm-go/ddpm/weights"
)

// readBoolNPY reads a numpy bool array (|b1, version 1 or 2 header).
func readBoolNPY(t *testing.T, path string) []bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 12 || string(b[:6]) != "\x93NUMPY" {
		t.Fatalf("%s: not a .npy file", path)
	}
	hl, off := int(binary.LittleEndian.Uint16(b[8:])), 10
	if b[6] != 1 {
		hl, off = int(binary.LittleEndian.Uint32(b[8:])), 12
	}
	if hdr := string(b[off : off+hl]); !strings.Contains(hdr, "'|b1'") {
		t.Fatalf("%s: header %q, want a bool array", path, hdr)
	}
	out := make([]bool, 0, len(b)-off-hl)
	for _, v := range b[off+hl:] {
		out = append(out, v != 0)
	}
	return out
}

// glideFixture is a glide or glide-inpaint folder's inputs.
type glideFixture struct {
	dir  string
	x    diffusion.Batch
	t    []float64
	in   TextInputs
	want []float32
}

func loadGlideFixture(t *testing.T, name string) glideFixture {
	t.Helper()
	f := loadFixtureNoLabels(t, name)
	g := glideFixture{dir: f.dir, x: f.x, t: f.t}
	raw, err := os.ReadFile(filepath.Join(f.dir, "prompts.json"))
	if err != nil {
		t.Fatal(err)
	}
	var prompts []string
	if err := json.Unmarshal(raw, &prompts); err != nil {
		t.Fatal(err)
	}
	toks, err := readNPY(t, filepath.Join(f.dir, "tokens.npy")).Int64s()
	if err != nil {
		t.Fatal(err)
	}
	mask := readBoolNPY(t, filepath.Join(f.dir, "mask.npy"))
	ctx := len(toks) / len(prompts)
	// Our tokenizer gives exactly the tokens and mask OpenAI's code fed
	// the model.
	gotT, gotM, err := TokenizePrompts(prompts, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotT) != len(toks) || len(gotM) != len(mask) {
		t.Fatalf("%d tokens, %d mask values; want %d, %d", len(gotT), len(gotM), len(toks), len(mask))
	}
	for i := range toks {
		if int64(gotT[i]) != toks[i] || gotM[i] != mask[i] {
			t.Fatalf("token %d: %d mask %v, want %d %v", i, gotT[i], gotM[i], toks[i], mask[i])
		}
	}
	g.in = TextInputs{Tokens: gotT, Mask: gotM}
	if _, err := os.Stat(filepath.Join(f.dir, "inpaint_image.npy")); err == nil {
		img := readNPY(t, filepath.Join(f.dir, "inpaint_image.npy"))
		mk := readNPY(t, filepath.Join(f.dir, "inpaint_mask.npy"))
		g.in.InpaintImage = &diffusion.Batch{N: img.Shape[0], C: img.Shape[1], H: img.Shape[2], W: img.Shape[3], Data: img.Float32s()}
		g.in.InpaintMask = &diffusion.Batch{N: mk.Shape[0], C: mk.Shape[1], H: mk.Shape[2], W: mk.Shape[3], Data: mk.Float32s()}
	}
	g.want = readNPY(t, filepath.Join(f.dir, "out.npy")).Float32s()
	return g
}

// loadFixtureNoLabels is loadFixture for folders without class labels.
func loadFixtureNoLabels(t *testing.T, name string) fixture {
	t.Helper()
	dir := filepath.Join(fixtures.Dir(t, "openai-small"), name)
	a := readNPY(t, filepath.Join(dir, "x.npy"))
	f := fixture{dir: dir, x: diffusion.Batch{N: a.Shape[0], C: a.Shape[1], H: a.Shape[2], W: a.Shape[3], Data: a.Float32s()}}
	ts, err := readNPY(t, filepath.Join(dir, "timesteps.npy")).Int64s()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range ts {
		f.t = append(f.t, float64(v))
	}
	return f
}

// TestFixtureGLIDE: glide-text2im's Text2ImUNet and InpaintText2ImUNet
// (32x32, channel_mult 1,2,2, text_ctx 16, transformer width 64, 2
// layers, 4 heads, xf_padding, final LayerNorm) on the prompts "a blue
// bird in the snow" and "" (all padding).
func TestFixtureGLIDE(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind Kind
	}{{"glide", Text2Im}, {"glide-inpaint", InpaintText2Im}} {
		t.Run(tc.name, func(t *testing.T) {
			f := loadGlideFixture(t, tc.name)
			m := loadModel(t, f.dir)
			if m.Kind() != tc.kind {
				t.Fatalf("kind %s, want %s", m.Kind(), tc.kind)
			}
			out, err := m.PredictText(context.Background(), f.x, f.t, f.in)
			if err != nil {
				t.Fatal(err)
			}
			if out.Len() != len(f.want) || out.C != 6 {
				t.Fatalf("output (%d,%d,%d,%d), want %d values", out.N, out.C, out.H, out.W, len(f.want))
			}
			e := relL2(out.Data, f.want)
			t.Logf("%s out: relative L2 %.3g", tc.kind, e)
			if e > fixtureTol {
				t.Fatalf("relative L2 error %.3g > %g", e, fixtureTol)
			}
			// Bound to its inputs for a sampler, the same.
			dm, err := m.WithText(f.in)
			if err != nil {
				t.Fatal(err)
			}
			out2, err := dm.Predict(context.Background(), f.x, f.t, nil)
			if err != nil {
				t.Fatal(err)
			}
			if e2 := relL2(out2.Data, out.Data); e2 != 0 {
				t.Fatalf("WithText: relative L2 %.3g against PredictText", e2)
			}
		})
	}
}

// tinyGlide is a small GLIDE config for the gradient and error tests.
const tinyGlide = "--image_size 8 --num_channels 32 --num_res_blocks 1 --channel_mult 1 --attention_resolutions 8 --num_head_channels 16 --text_ctx 4 --xf_width 16 --xf_layers 1 --xf_heads 2 --dropout 0"

// TestGLIDEParamGradientsFiniteDifference checks VJP's parameter
// gradients of a small GLIDE model (text embeddings with padding,
// LayerNorm, the transformer's attention and GELU MLP, transformer_proj,
// encoder_kv attention) against central differences.
func TestGLIDEParamGradientsFiniteDifference(t *testing.T) {
	for _, tc := range []struct{ name, flags string }{
		{"text2im", tinyGlide},
		{"inpaint", tinyGlide + " --inpaint True"},
	} {
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
			r := rand.New(rand.NewPCG(21, 22))
			x := diffusion.NewBatch(2, 3, 8, 8)
			for i := range x.Data {
				x.Data[i] = float32(r.NormFloat64())
			}
			in := TextInputs{Tokens: []int{10, 20, 10, 50256, 7, 50256, 50256, 50256},
				Mask: []bool{true, true, true, false, true, false, false, false}}
			if cfg.Inpaint {
				img, mk := diffusion.NewBatch(2, 3, 8, 8), diffusion.NewBatch(2, 1, 8, 8)
				for i := range img.Data {
					img.Data[i] = float32(r.NormFloat64())
				}
				for i := range mk.Data {
					mk.Data[i] = float32(r.IntN(2))
				}
				in.InpaintImage, in.InpaintMask = &img, &mk
			}
			tt := []float64{5, 800}
			feeds, err := m.textFeeds(x, tt, in)
			if err != nil {
				t.Fatal(err)
			}
			m.tok.IDs, m.tok.Mask = in.Tokens, in.Mask
			e := m.Engine()
			check := fdChecker(t, e, Key(x), feeds, r)
			byName := map[string]int{}
			for _, p := range e.Params() {
				byName[p.Name] = p.Offset
			}
			// Table rows of tokens in use (and of one that is not: zero),
			// positions of real and padded tokens.
			tok := byName["token_embedding.weight"]
			check("token_embedding[10]", tok+10*16+3)
			check("token_embedding[7]", tok+7*16+5)
			check("token_embedding[11]", tok+11*16)
			check("positional_embedding[1]", byName["positional_embedding"]+16+2)
			check("padding_embedding[3]", byName["padding_embedding"]+3*16+1)
			check("padding_embedding[1]", byName["padding_embedding"]+16+4)
			picked := []string{"transformer.resblocks.0.ln_1", "transformer.resblocks.0.attn.c_qkv", "transformer.resblocks.0.attn.c_proj",
				"transformer.resblocks.0.ln_2", "transformer.resblocks.0.mlp.c_fc", "transformer.resblocks.0.mlp.c_proj",
				"final_ln", "transformer_proj", "input_blocks.1.1.encoder_kv", "middle_block.1.encoder_kv", "middle_block.1.qkv",
				"output_blocks.0.1.qkv", "input_blocks.0.0"}
			for _, pre := range picked {
				n := 0
				for _, p := range e.Params() {
					if strings.HasPrefix(p.Name, pre) {
						check(p.Name, p.Offset+r.IntN(p.Size))
						n++
					}
				}
				if n == 0 {
					t.Errorf("no parameter %s*", pre)
				}
			}
		})
	}
}

// TestGLIDEConfig: the flag sets pick the GLIDE kinds, presets parse,
// JSON round-trips and bad values are errors.
func TestGLIDEConfig(t *testing.T) {
	for _, tc := range []struct {
		preset string
		kind   Kind
		size   int
	}{{"base.pt", Text2Im, 64}, {"base_inpaint", InpaintText2Im, 64}, {"upsample.pt", SuperResText2Im, 256}, {"upsample_inpaint", SuperResInpaintText2Im, 256}} {
		c, ok := Preset(tc.preset)
		if !ok {
			t.Fatalf("no preset %s", tc.preset)
		}
		if c.Kind != tc.kind || c.ImageSize != tc.size || c.TextCtx != 128 || c.XFWidth != 512 || c.XFLayers != 16 {
			t.Errorf("%s: %+v %+v", tc.preset, c, *c.TextConfig)
		}
		back, err := ParseArgs(c.JSON())
		if err != nil {
			t.Fatal(err)
		}
		if string(back.JSON()) != string(c.JSON()) {
			t.Errorf("%s: round trip\n%s\n%s", tc.preset, c.JSON(), back.JSON())
		}
		if _, err := c.Diffusion(); err != nil {
			t.Errorf("%s: %v", tc.preset, err)
		}
	}
	bad := map[string]string{
		"class name disagrees": `{"_class_name": "Text2ImUNet", "inpaint": true}`,
		"heads":                `{"xf_width": 10, "xf_heads": 3}`,
		"text flag on a UNet":  `{"_class_name": "UNetModel", "text_ctx": 3}`,
		"channel_mult levels":  `{"xf_width": 64, "image_size": 64, "channel_mult": "1,2"}`,
		"text_ctx":             `{"text_ctx": 0}`,
	}
	for name, js := range bad {
		if _, err := ParseArgs([]byte(js)); err == nil {
			t.Errorf("%s: %s accepted", name, js)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// The fixture's args.json of an ADM model stays a UNet without text.
	c, err := ParseArgs([]byte(`{"image_size": 64, "class_cond": true}`))
	if err != nil || c.Kind != UNet || c.TextConfig != nil || strings.Contains(string(c.JSON()), "text_ctx") {
		t.Fatalf("plain args: %v %+v", err, c)
	}
}

// TestGLIDEInputErrors: wrong inputs are errors naming the problem.
func TestGLIDEInputErrors(t *testing.T) {
	cfg, err := ParseFlags(tinyGlide + " --inpaint True")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, newCPU(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	x := diffusion.NewBatch(1, 3, 8, 8)
	toks, mask, err := m.Tokenize([]string{"a cat"})
	if err != nil {
		t.Fatal(err)
	}
	good := TextInputs{Tokens: toks, Mask: mask}
	if _, err := m.PredictText(ctx, x, []float64{3}, good); err != nil {
		t.Fatalf("no inpainting inputs (zeros): %v", err)
	}
	if _, err := m.Predict(ctx, x, []float64{3}, nil); err == nil || !strings.Contains(err.Error(), "PredictText") {
		t.Errorf("Predict: %v", err)
	}
	small := diffusion.NewBatch(1, 1, 4, 4)
	for name, in := range map[string]TextInputs{
		"short tokens": {Tokens: toks[:2], Mask: mask[:2]},
		"no mask":      {Tokens: toks},
		"bad id":       {Tokens: []int{1, 2, 3, Vocab}, Mask: mask},
		"mask shape":   {Tokens: toks, Mask: mask, InpaintMask: &small},
		"low res":      {Tokens: toks, Mask: mask, LowRes: &x},
	} {
		if _, err := m.PredictText(ctx, x, []float64{3}, in); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestGLIDEConvert saves the GLIDE fixture as a ddpm model file and reads
// it back: same config, same output bit for bit.
func TestGLIDEConvert(t *testing.T) {
	f := loadGlideFixture(t, "glide-inpaint")
	m := loadModel(t, f.dir)
	path := filepath.Join(t.TempDir(), "glide.safetensors")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	m2, src, err := Load[[]float32](path, "", newCPU(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if string(m2.Config().JSON()) != string(m.Config().JSON()) || m2.Kind() != InpaintText2Im {
		t.Fatalf("config after save/load:\n%s\nwant\n%s", m2.Config().JSON(), m.Config().JSON())
	}
	if len(src.DiffusionConfig) == 0 {
		t.Fatal("converted file has no diffusion config")
	}
	ctx := context.Background()
	a, err := m.PredictText(ctx, f.x, f.t, f.in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m2.PredictText(ctx, f.x, f.t, f.in)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.Data {
		if a.Data[i] != b.Data[i] {
			t.Fatalf("output[%d] %v after save/load, want %v", i, b.Data[i], a.Data[i])
		}
	}
}

// TestGLIDESuperRes: the upsampler variants take x, (the masked image and
// mask,) and the low-resolution image upsampled, in that order: the
// stem convolution has 6 and 10 input channels, and a zero low_res
// weight slice makes the low-resolution image irrelevant.
func TestGLIDESuperRes(t *testing.T) {
	for _, tc := range []struct {
		flags string
		kind  Kind
		in    int
	}{{tinyGlide + " --super_res True", SuperResText2Im, 6}, {tinyGlide + " --super_res True --inpaint True", SuperResInpaintText2Im, 10}} {
		t.Run(string(tc.kind), func(t *testing.T) {
			cfg, err := ParseFlags(tc.flags)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Kind != tc.kind {
				t.Fatalf("kind %s, want %s", cfg.Kind, tc.kind)
			}
			m, err := New(cfg, newCPU(t), 5)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			w := m.Shapes()["input_blocks.0.0.weight"]
			if w[1] != tc.in {
				t.Fatalf("stem weight %v, want %d input channels", w, tc.in)
			}
			ctx := context.Background()
			x := diffusion.NewBatch(2, 3, 8, 8)
			toks, mask, err := m.Tokenize([]string{"a", ""})
			if err != nil {
				t.Fatal(err)
			}
			in := TextInputs{Tokens: toks, Mask: mask}
			if _, err := m.PredictText(ctx, x, []float64{1, 2}, in); err == nil {
				t.Fatal("no low_res accepted")
			}
			// Zero the stem's low_res input channels (the last 3).
			ts, err := m.Tensors()
			if err != nil {
				t.Fatal(err)
			}
			stem := ts["input_blocks.0.0.weight"]
			per := 9
			for k := 0; k < w[0]; k++ {
				for c := tc.in - 3; c < tc.in; c++ {
					clear(stem.Data[(k*tc.in+c)*per : (k*tc.in+c+1)*per])
				}
			}
			if err := m.SetTensors(ts); err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 2))
			var outs [][]float32
			for range 2 {
				low := diffusion.NewBatch(2, 3, 4, 4)
				for i := range low.Data {
					low.Data[i] = float32(r.NormFloat64())
				}
				in.LowRes = &low
				out, err := m.PredictText(ctx, x, []float64{1, 2}, in)
				if err != nil {
					t.Fatal(err)
				}
				outs = append(outs, out.Data)
			}
			if e := relL2(outs[1], outs[0]); e != 0 {
				t.Fatalf("output depends on low_res through zero weights: rel L2 %.3g", e)
			}
		})
	}
}

// TestGLIDEGuidanceLabels: a model bound by WithText maps labels to its
// prompts and -1 to the empty prompt (with the row's item's image
// inputs), so diffusion's classifier-free guidance batches GLIDE's
// conditional and unconditional passes; a guided DDIM run works.
func TestGLIDEGuidanceLabels(t *testing.T) {
	f := loadGlideFixture(t, "glide-inpaint")
	m := loadModel(t, f.dir)
	ctx := context.Background()
	dm, err := m.WithText(f.in)
	if err != nil {
		t.Fatal(err)
	}
	// Rows: item 1, item 0, unconditional of items 0 and 1 (k mod 2).
	x2 := diffusion.NewBatch(4, 3, f.x.H, f.x.W)
	per := 3 * f.x.H * f.x.W
	for k, i := range []int{1, 0, 0, 1} {
		copy(x2.Data[k*per:(k+1)*per], f.x.Data[i*per:(i+1)*per])
	}
	t4 := []float64{f.t[1], f.t[0], f.t[0], f.t[1]}
	got, err := dm.Predict(ctx, x2, t4, []int{1, 0, -1, -1})
	if err != nil {
		t.Fatal(err)
	}
	const tc = 16
	nullT, nullM, err := TokenizePrompts([]string{""}, tc)
	if err != nil {
		t.Fatal(err)
	}
	in := TextInputs{
		Tokens:       append(append(append(append([]int{}, f.in.Tokens[tc:]...), f.in.Tokens[:tc]...), nullT...), nullT...),
		Mask:         append(append(append(append([]bool{}, f.in.Mask[tc:]...), f.in.Mask[:tc]...), nullM...), nullM...),
		InpaintImage: gather(f.in.InpaintImage, []int{1, 0, 0, 1}),
		InpaintMask:  gather(f.in.InpaintMask, []int{1, 0, 0, 1}),
	}
	want, err := m.PredictText(ctx, x2, t4, in)
	if err != nil {
		t.Fatal(err)
	}
	if e := relL2(got.Data, want.Data); e != 0 {
		t.Fatalf("labelled rows differ from PredictText: rel L2 %.3g", e)
	}
	// Row 0 is item 1 of the fixture.
	if e := relL2(got.Data[:6*f.x.H*f.x.W], f.want[6*f.x.H*f.x.W:]); e > fixtureTol {
		t.Fatalf("row 0 against the fixture's item 1: rel L2 %.3g", e)
	}
	for _, bad := range [][]int{{2, 0, -1, -1}, {-2, 0, 0, 0}, {0}} {
		if _, err := dm.Predict(ctx, x2, t4, bad); err == nil {
			t.Errorf("labels %v accepted", bad)
		}
	}
	// A short guided DDIM run through diffusion's sampler.
	dc, err := m.Config().Diffusion()
	if err != nil {
		t.Fatal(err)
	}
	d, err := diffusion.New(dc)
	if err != nil {
		t.Fatal(err)
	}
	out, err := d.Sample(ctx, dm, diffusion.Options{Sampler: diffusion.SamplerDDIM, Steps: 3, Seed: 1, Labels: []int{0, 1}, Guidance: 3,
		N: 2, C: 3, H: f.x.H, W: f.x.W})
	if err != nil {
		t.Fatal(err)
	}
	if out.N != 2 || out.C != 3 {
		t.Fatalf("sample shape (%d,%d,%d,%d)", out.N, out.C, out.H, out.W)
	}
}
