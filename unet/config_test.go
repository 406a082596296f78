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
