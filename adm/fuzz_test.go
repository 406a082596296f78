package adm

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseArgs: any bytes give a config or an error, never a panic, and
// an accepted config survives its own JSON round trip.
func FuzzParseArgs(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "*", "args.json"))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, name := range Presets() {
		c, _ := Preset(name)
		f.Add(c.JSON())
	}
	f.Add([]byte(`{"channel_mult": [0.5, 1], "image_size": 512}`))
	f.Add([]byte(`{"_class_name": "SuperResModel", "small_size": 0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseArgs(b)
		if err != nil {
			return
		}
		back, err := ParseArgs(c.JSON())
		if err != nil {
			t.Fatalf("accepted %q, but not its own JSON %s: %v", b, c.JSON(), err)
		}
		if string(back.JSON()) != string(c.JSON()) {
			t.Fatalf("round trip of %q:\n%s\n%s", b, c.JSON(), back.JSON())
		}
	})
}

// FuzzParseFlags: flag strings never panic.
func FuzzParseFlags(f *testing.F) {
	for _, name := range []string{"64x64_diffusion", "64_256_upsampler", "64x64_classifier"} {
		f.Add(presets[name])
	}
	f.Add("--image_size=")
	f.Fuzz(func(t *testing.T, s string) {
		if c, err := ParseFlags(s); err == nil {
			if err := c.Validate(); err != nil {
				t.Fatalf("accepted %q but Validate says %v", s, err)
			}
		}
	})
}
