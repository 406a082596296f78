package unet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseConfigErrors checks that unsupported values name their key.
func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ json, key string }{
		{`{"act_fn": "gelu"}`, "act_fn"},
		{`{"time_embedding_type": "fourier"}`, "time_embedding_type"},
		{`{"resnet_time_scale_shift": "scale_shift"}`, "resnet_time_scale_shift"},
		{`{"down_block_types": ["DownBlock2D"]}`, "down_block_types"},
		{`{"down_block_types": ["CrossAttnDownBlock2D","DownBlock2D","DownBlock2D","DownBlock2D"]}`, "down_block_types[0]"},
		{`{"block_out_channels": [100, 200, 300, 400]}`, "block_out_channels[0]"},
		{`{"norm_eps": 0}`, "norm_eps"},
		{`{"dropout": 1}`, "dropout"},
		{`{"class_embed_type": "timestep"}`, "class_embed_type"},
		{`{"attention_head_dim": 9}`, "attention_head_dim"},
		{`{"sample_size": 30}`, "sample_size"},
		{`{"block_out_channels": [32,32,32,32,32,32,32,32,32], "down_block_types": [], "up_block_types": []}`, "block_out_channels"},
		{`{"sample_size": 1048576}`, "sample_size"},
		{`{"num_class_embeds": 4, "ddpm_null_class": 4}`, "ddpm_null_class"},
		{`{"in_channels": "three"}`, "in_channels"},
		{`[1, 2]`, "config"},
	} {
		_, err := ParseConfig([]byte(tc.json))
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: error %v, want one naming %s", tc.json, err, tc.key)
		}
	}
	// The defaults alone are diffusers' defaults: a valid config.
	if _, err := ParseConfig([]byte(`{}`)); err != nil {
		t.Errorf("{}: %v", err)
	}
}

// TestConfigJSONRoundTrip checks that Config.JSON parses back to the same
// config, for the presets.
func TestConfigJSONRoundTrip(t *testing.T) {
	for _, name := range []string{"ddpm-cifar10", "mnist"} {
		c, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseConfig(c.JSON())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(back.JSON()) != string(c.JSON()) {
			t.Errorf("%s: round trip changed the config:\n%s\n%s", name, c.JSON(), back.JSON())
		}
	}
}

// FuzzParseConfig feeds arbitrary bytes (configs come from untrusted
// files): ParseConfig must not panic, and an accepted config must have the
// invariants the graph builder relies on.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 8, "sample_size": 16}`))
	f.Add([]byte(`{"num_class_embeds": 11, "ddpm_null_class": 10, "attention_head_dim": 8}`))
	if b, err := os.ReadFile(filepath.Join("..", "..", "shared", "fixtures", "diffusers-unet-small", "config.json")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		n := len(c.BlockOutChannels)
		if n < 1 || n > maxLevels || len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n {
			t.Fatalf("accepted inconsistent levels: %+v", c)
		}
		for _, ch := range c.BlockOutChannels {
			if h, d := c.heads(ch); ch%c.NormNumGroups != 0 || h*d != ch || h < 1 {
				t.Fatalf("accepted channels %d with groups %d, heads %d x %d", ch, c.NormNumGroups, h, d)
			}
		}
		if c.SampleSize%(1<<(n-1)) != 0 {
			t.Fatalf("accepted sample_size %d for %d levels", c.SampleSize, n)
		}
	})
}

// TestConfigKeysHonouredOrRefused: attention_head_dim absent is diffusers'
// default 8, null is one head, 0 is refused; time_embedding_dim other
// than the default is refused rather than ignored.
func TestConfigKeysHonouredOrRefused(t *testing.T) {
	base := `"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D","AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D","UpBlock2D"], "norm_num_groups": 8`
	c, err := ParseConfig([]byte(`{` + base + `}`))
	if err != nil || c.AttentionHeadDim == nil || *c.AttentionHeadDim != 8 {
		t.Fatalf("absent attention_head_dim: %v, %v; want diffusers' default 8", c.AttentionHeadDim, err)
	}
	if h, d := c.heads(64); h != 8 || d != 8 {
		t.Errorf("heads(64) = %d x %d, want 8 heads of 8", h, d)
	}
	c, err = ParseConfig([]byte(`{` + base + `, "attention_head_dim": null}`))
	if err != nil || c.AttentionHeadDim != nil {
		t.Fatalf("null attention_head_dim: %v, %v; want nil (one head)", c.AttentionHeadDim, err)
	}
	for _, tc := range []struct{ extra, key string }{
		{`"attention_head_dim": 0`, "attention_head_dim"},
		{`"time_embedding_dim": 100`, "time_embedding_dim"},
	} {
		if _, err := ParseConfig([]byte(`{` + base + `, ` + tc.extra + `}`)); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: error %v, want one naming %s", tc.extra, err, tc.key)
		}
	}
	if _, err := ParseConfig([]byte(`{` + base + `, "time_embedding_dim": 128}`)); err != nil {
		t.Errorf("time_embedding_dim = 4*block_out_channels[0]: %v", err)
	}
}

// TestEnormousConfig: a config inside every per-field limit that would
// need tens of GB is refused before anything is allocated, by the size
// check and by the parameter count of the weights it comes with.
func TestEnormousConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`{"block_out_channels": [8192, 8192, 8192], "layers_per_block": 16,
		"down_block_types": ["DownBlock2D","DownBlock2D","DownBlock2D"], "up_block_types": ["UpBlock2D","UpBlock2D","UpBlock2D"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckSize(0); err == nil || !strings.Contains(err.Error(), "GiB") {
		t.Fatalf("CheckSize: %v", err)
	}
	if _, err := New(c, newCPU(t), 1); err == nil {
		t.Fatal("New built an enormous model")
	}
	small := tinyConfig()
	if err := small.CheckSize(0); err != nil {
		t.Fatalf("tiny config refused: %v", err)
	}
	cifar, _ := Preset("ddpm-cifar10")
	if err := cifar.CheckSize(0); err != nil {
		t.Fatalf("ddpm-cifar10 refused: %v", err)
	}
	m, err := New(small, newCPU(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got, want := small.NumParams(), int64(m.NumParams()); got != want {
		t.Fatalf("Config.NumParams = %d, the built model has %d", got, want)
	}
	if got, want := cifar.NumParams(), int64(35746307); got != want {
		t.Fatalf("ddpm-cifar10 Config.NumParams = %d, want %d", got, want)
	}
}
