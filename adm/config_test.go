package adm

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/schedule"
)

// TestPresets resolves every released checkpoint's config, and checks
// the parameter counts of three of them, narrowed to num_channels 32 (64
// for the classifier) so the test stays fast, against guided-diffusion's
// own modules (sum of state_dict numel, counted with its script_util).
func TestPresets(t *testing.T) {
	want := map[string]struct{ width, headCh, params int }{
		"64x64_diffusion":  {32, 32, 8362534},
		"64x64_classifier": {64, 64, 16520104},
		"64_256_upsampler": {32, -1, 8804390},
	}
	for _, name := range Presets() {
		cfg, ok := Preset(name + ".pt")
		if !ok {
			t.Fatalf("%s: no preset", name)
		}
		a, err := cfg.resolve()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %s %dx%d, mult %v, attention at rates %v", name, cfg.Kind, a.size, a.size, a.mult, a.attnDS)
		w, ok := want[name]
		if !ok {
			continue
		}
		cfg.NumChannels = w.width
		if cfg.Kind != Classifier {
			cfg.NumHeadChannels = w.headCh
		}
		m, err := New(cfg, newCPU(t), 1)
		if err != nil {
			t.Fatal(err)
		}
		if m.NumParams() != w.params {
			t.Errorf("%s at width %d: %d parameters, want %d", name, w.width, m.NumParams(), w.params)
		}
		m.Close()
	}
	if c, _ := Preset("/models/64_256_upsampler.pt"); c.Kind != SuperRes || c.ImageSize != 256 || c.SmallSize != 64 {
		t.Errorf("64_256_upsampler: %+v", c)
	}
	if c, _ := Preset("64x64_classifier"); c.Kind != Classifier || c.NumResBlocks != 4 || c.Pool != "attention" {
		t.Errorf("64x64_classifier: %+v", c)
	}
	if _, ok := Preset("my_model.pt"); ok {
		t.Error("unknown name: a preset")
	}
}

func TestParseFlagsAndArgs(t *testing.T) {
	f, err := ParseFlags("--attention_resolutions 32,16,8 --class_cond True --image_size=64 --learn_sigma true --num_channels 32 --num_res_blocks 1 --channel_mult 1,2,2 --num_head_channels 16 --use_new_attention_order 1")
	if err != nil {
		t.Fatal(err)
	}
	j, err := ParseArgs([]byte(`{"attention_resolutions": "32,16,8", "class_cond": true, "image_size": 64, "learn_sigma": "True",
		"num_channels": 32, "num_res_blocks": 1, "channel_mult": [1, 2, 2], "num_head_channels": 16, "use_new_attention_order": true,
		"use_checkpoint": false, "batch_size": 4}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(f.JSON()) != string(j.JSON()) {
		t.Fatalf("flags and JSON differ:\n%s\n%s", f.JSON(), j.JSON())
	}
	back, err := ParseArgs(f.JSON())
	if err != nil || string(back.JSON()) != string(f.JSON()) {
		t.Fatalf("round trip: %v\n%s", err, back.JSON())
	}
	if !IsConfig(f.JSON()) || IsConfig([]byte(`{"_class_name": "UNet2DModel"}`)) {
		t.Error("IsConfig")
	}
	c, err := ParseArgs([]byte(`{"classifier_width": 64, "classifier_pool": "spatial", "image_size": 128}`))
	if err != nil || c.Kind != Classifier || c.NumChannels != 64 || c.Pool != "spatial" || c.NumResBlocks != 2 {
		t.Fatalf("classifier flags: %v %+v", err, c)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"unknown flag", `{"num_channel": 3}`, "num_channel"},
		{"bad bool", `{"class_cond": "maybe"}`, "class_cond"},
		{"bad int", `{"num_channels": 1.5}`, "num_channels"},
		{"object", `{"num_channels": {}}`, "num_channels"},
		{"class name", `{"_class_name": "Foo"}`, "_class_name"},
		{"image size", `{"image_size": 96}`, "image_size 96"},
		{"groups", `{"num_channels": 48, "channel_mult": "1,2"}`, "GroupNorm32"},
		{"heads", `{"num_channels": 32, "channel_mult": "1,2", "num_head_channels": 24, "attention_resolutions": "32"}`, "heads"},
		{"pool", `{"classifier_pool": "max"}`, "classifier_pool"},
		{"attention", `{"attention_resolutions": "16,x"}`, "attention_resolutions"},
		{"dropout", `{"dropout": 1}`, "dropout"},
		{"not json", `[1]`, "JSON object"},
	} {
		_, err := ParseArgs([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %q", tc.name, err, tc.want)
		}
	}
	if _, err := ParseFlags("--image_size"); err == nil {
		t.Error("flag without value: no error")
	}
	if _, err := ParseFlags("image_size 64"); err == nil {
		t.Error("flag without --: no error")
	}
}

func TestDiffusionConfig(t *testing.T) {
	c, _ := Preset("64x64_diffusion")
	d, err := c.Diffusion()
	if err != nil {
		t.Fatal(err)
	}
	if d.Variance != diffusion.LearnedRange || d.Timesteps != 1000 || d.Schedule != schedule.Cosine {
		t.Errorf("64x64 diffusion: %+v (schedule %v)", d, d.Schedule)
	}
	if _, err := diffusion.New(d); err != nil {
		t.Fatal(err)
	}
	c.NoiseSchedule = "quadratic"
	if _, err := c.Diffusion(); err == nil {
		t.Error("noise_schedule quadratic: no error")
	}
}

func TestBilinear(t *testing.T) {
	// 2x2 -> 4x4 with align_corners=False: PyTorch gives rows
	// [1, 1.25, 1.75, 2] for the input row [1, 2].
	x := diffusion.Batch{N: 1, C: 1, H: 2, W: 2, Data: []float32{1, 2, 3, 4}}
	y := Bilinear(x, 4, 4)
	want := []float32{1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4}
	for i := range want {
		if math.Abs(float64(y.Data[i]-want[i])) > 1e-6 {
			t.Fatalf("bilinear %v, want %v", y.Data, want)
		}
	}
}

func TestInputErrors(t *testing.T) {
	cfg, err := ParseFlags("--image_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 --class_cond True --attention_resolutions 8")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, newCPU(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	good := diffusion.NewBatch(1, 3, 16, 16)
	for _, tc := range []struct {
		name string
		x    diffusion.Batch
		t    []float64
		y    []int
	}{
		{"channels", diffusion.NewBatch(1, 4, 16, 16), []float64{1}, []int{0}},
		{"size", diffusion.NewBatch(1, 3, 15, 15), []float64{1}, []int{0}},
		{"timesteps", good, []float64{1, 2}, []int{0}},
		{"negative t", good, []float64{-1}, []int{0}},
		{"NaN t", good, []float64{math.NaN()}, []int{0}},
		{"no labels", good, []float64{1}, nil},
		{"label range", good, []float64{1}, []int{1000}},
	} {
		if _, err := m.Predict(ctx, tc.x, tc.t, tc.y); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if _, err := m.Logits(ctx, good, []float64{1}); err == nil {
		t.Error("Logits on a UNet: no error")
	}
	if _, err := m.WithLowRes(good); err == nil {
		t.Error("WithLowRes on a UNet: no error")
	}
}

// TestExtensions: ddpm's in_channels, num_classes and
// classifier_channel_mult build a one-channel ten-class classifier (the
// MNIST one of ddpm train-classifier), a combined flag string's model
// channel_mult does not reach a classifier, and bad values are refused.
func TestExtensions(t *testing.T) {
	cfg, err := ParseFlags("--image_size 16 --in_channels 1 --num_classes 10 --classifier_width 64 --classifier_depth 1 " +
		"--classifier_channel_mult 1,2 --classifier_attention_resolutions 8 --classifier_pool attention --channel_mult 1,1,1,1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kind != Classifier || cfg.ChannelMult != "1,2" || cfg.InChannels != 1 || cfg.NumClasses != 10 {
		t.Fatalf("parsed %+v", cfg)
	}
	back, err := ParseArgs(cfg.JSON())
	if err != nil || back != cfg {
		t.Fatalf("stored JSON reads back as %+v (%v)", back, err)
	}
	m, err := New(cfg, newCPU(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if info := m.Info(); info.InChannels != 1 || info.OutChannels != 10 {
		t.Fatalf("info %+v: want 1 input channel, 10 logits", info)
	}
	logits, err := m.Logits(context.Background(), diffusion.NewBatch(2, 1, 16, 16), []float64{3, 500})
	if err != nil || len(logits) != 20 {
		t.Fatalf("logits: %d values, %v", len(logits), err)
	}
	if _, err := m.Logits(context.Background(), diffusion.NewBatch(1, 3, 16, 16), []float64{3}); err == nil || !strings.Contains(err.Error(), "takes 1") {
		t.Errorf("3-channel input to a 1-channel classifier: %v", err)
	}
	for _, bad := range []string{"--in_channels 0 --image_size 16 --in_channels -1", "--num_classes -3"} {
		if _, err := ParseFlags(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
