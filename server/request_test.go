package server

import (
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
)

func TestClassFromPrompt(t *testing.T) {
	mnist := ModelInfo{NumClasses: 10, ClassNames: digits}
	fashion := ModelInfo{NumClasses: 10, ClassNames: []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
		"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}}
	unnamed := ModelInfo{NumClasses: 3}
	tests := []struct {
		name   string
		info   ModelInfo
		prompt string
		want   int
	}{
		{"empty", mnist, "", -1},
		{"digit", mnist, "7", 7},
		{"digit in text", mnist, "a handwritten 3, thick", 3},
		{"word", mnist, "seven", 7},
		{"word case", mnist, "SEVEN!", 7},
		{"no class", mnist, "a cat", -1},
		{"digit out of range", mnist, "42", -1},
		{"not a substring match", mnist, "someone", -1},
		{"fashion name", fashion, "an ankle boot", 9},
		{"fashion longest wins", fashion, "a t-shirt/top", 0},
		{"fashion shirt", fashion, "Shirt", 6},
		{"fashion index", fashion, "7", 7},
		{"fashion number word", fashion, "class seven", 7},
		{"unnamed", unnamed, "two", 2},
		{"unnamed out of range", unnamed, "five", -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := classFromPrompt(tc.prompt, tc.info); got != tc.want {
				t.Errorf("classFromPrompt(%q) = %d, want %d", tc.prompt, got, tc.want)
			}
		})
	}
}

// TestGrid: the server lays grids out as the CLI does (img.DefaultGrid:
// 2 black pixels around and between, grayscale kept); one image is
// returned as it is.
func TestGrid(t *testing.T) {
	mk := func(c uint8) image.Image {
		img := image.NewGray(image.Rect(0, 0, 3, 2))
		for i := range img.Pix {
			img.Pix[i] = c
		}
		return img
	}
	const p = 2
	g := grid([]image.Image{mk(10), mk(20), mk(30)}) // 2 columns, 2 rows
	if _, ok := g.(*image.Gray); !ok {
		t.Errorf("grid of gray images is %T, want *image.Gray", g)
	}
	if b := g.Bounds(); b.Dx() != 2*3+3*p || b.Dy() != 2*2+3*p {
		t.Fatalf("bounds %v", b)
	}
	checks := []struct {
		x, y int
		want uint8
	}{{p, p, 10}, {p + 2, p + 1, 10}, {2*p + 3, p, 20}, {p, 2*p + 2, 30}, {0, 0, 0}, {p + 3, p, 0}, {2*p + 3, 2*p + 2, 0}}
	for _, c := range checks {
		if got := color.GrayModel.Convert(g.At(c.x, c.y)).(color.Gray).Y; got != c.want {
			t.Errorf("(%d,%d) = %d, want %d", c.x, c.y, got, c.want)
		}
	}
	if one := grid([]image.Image{mk(5)}); one.(*image.Gray).Pix[0] != 5 {
		t.Error("one image is not returned as is")
	}
}

func TestModelInfoCheck(t *testing.T) {
	ok := NewFakeGenerator(8, 1, digits).Info()
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*ModelInfo)
		want string
	}{
		{"name", func(m *ModelInfo) { m.Name = "" }, "Name"},
		{"size", func(m *ModelInfo) { m.ImageSize = 0 }, "ImageSize"},
		{"channels", func(m *ModelInfo) { m.Channels = 2 }, "Channels"},
		{"classes", func(m *ModelInfo) { m.NumClasses = -1 }, "NumClasses"},
		{"names", func(m *ModelInfo) { m.ClassNames = m.ClassNames[:3] }, "ClassNames"},
		{"T", func(m *ModelInfo) { m.TrainSteps = 0 }, "TrainSteps"},
		{"default steps", func(m *ModelInfo) { m.DefaultSteps = 1001 }, "DefaultSteps"},
		{"sampler", func(m *ModelInfo) { m.DefaultSampler = "x" }, "DefaultSampler"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := ok
			tc.edit(&m)
			err := m.Check()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want mention of %s", err, tc.want)
			}
			if _, err := New(&FakeGenerator{Model: m}, Options{}); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}

func TestOptionsCheck(t *testing.T) {
	g := NewFakeGenerator(8, 1, nil)
	for _, o := range []Options{{MaxBatch: -1}, {QueueSize: -1}, {MaxN: 5000}, {MaxSteps: -1}, {MaxBodyBytes: 10},
		{MaxGuidance: -1}, {MaxJobs: -1}, {DrainTimeout: -1}} {
		if _, err := New(g, o); err == nil {
			t.Errorf("New accepted %+v", o)
		}
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New accepted a nil generator")
	}
}

// FuzzDecodeRequest: no body makes the decoder or the validation panic,
// and every rejection is a 4xx APIError naming what is wrong.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{`{}`, `{"n":2,"steps":10,"sampler":"ddim","eta":0.5,"seed":3,"class_label":1,"guidance_scale":2}`,
		`{"prompt":"seven","size":"8x8","model":"default","response_format":"b64_json"}`, `{"n":"x"}`, `[`, `{"eta":1e400}`,
		`{"seed":-9223372036854775808,"n":16}`, `{"prompt":"\u0000\ud800"}`, `null`, `{"quality":{"a":[1,2]}}`,
		`{"STEPS":4}`, `{"ſteps":3}`, `{"n":1,"n":2}`, `{"n":null}`, `{"steps":2}]`, "{\"\xff\":1}"} {
		f.Add([]byte(s))
	}
	info := NewFakeGenerator(8, 1, digits).Info()
	lim := limits{maxN: 16, maxSteps: 1000, maxGuidance: 20, maxBody: 4096}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeImageRequest(strings.NewReader(string(body)), lim.maxBody)
		if err == nil {
			var g genRequest
			g, err = validate(req, info, diffusion.SamplerDDIM, lim, func() int64 { return 1 })
			if err == nil {
				s := g.settings
				if len(g.seeds) < 1 || len(g.seeds) > lim.maxN || s.Steps < 1 || s.Steps > lim.maxSteps ||
					s.Eta < 0 || s.Eta > 1 || s.Guidance < 0 || s.Guidance > lim.maxGuidance || len(g.classes) != len(g.seeds) {
					t.Fatalf("accepted out-of-bounds request %s -> %+v", body, g)
				}
				for _, c := range g.classes {
					if c < 0 || c >= info.NumClasses {
						t.Fatalf("request %s: class %d for a %d-class model", body, c, info.NumClasses)
					}
				}
				if s.Sampler != diffusion.SamplerDDPM && s.Sampler != diffusion.SamplerDDIM {
					t.Fatalf("sampler %v", s.Sampler)
				}
				return
			}
		}
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status < 400 || ae.Status > 499 || ae.Message == "" {
			t.Fatalf("body %q: error %v is not a 4xx APIError", body, err)
		}
		if _, err := json.Marshal(ae.body()); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzHandler sends arbitrary bodies through the whole HTTP stack: never a
// 5xx, always JSON.
func FuzzHandler(f *testing.F) {
	f.Add([]byte(`{"n":2,"steps":3}`), uint8(0))
	f.Add([]byte(`{"steps":1,"prompt":"nine"}`), uint8(1))
	f.Add([]byte(`{"n":99}`), uint8(2))
	f.Add([]byte(`{`), uint8(2))
	s, err := New(NewFakeGenerator(4, 1, digits), Options{MaxSteps: 20, MaxN: 4})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close)
	paths := []string{"/v1/images/generations", "/v1/generate", "/v1/jobs"}
	f.Fuzz(func(t *testing.T, body []byte, route uint8) {
		w := do(t, s.Handler(), "POST", paths[int(route)%len(paths)], string(body))
		if w.Code >= 500 {
			t.Fatalf("%s %q: status %d %s", paths[int(route)%len(paths)], body, w.Code, w.Body)
		}
		if w.Code >= 400 {
			apiErr(t, w)
		}
	})
}

func TestSeedClass(t *testing.T) {
	counts := make([]int, 10)
	for seed := int64(0); seed < 10000; seed++ {
		c := seedClass(seed, 10)
		if c != seedClass(seed, 10) {
			t.Fatal("not deterministic")
		}
		counts[c]++
	}
	for c, k := range counts {
		if k < 900 || k > 1100 {
			t.Errorf("class %d drawn %d times of 10000", c, k)
		}
	}
	if c := seedClass(-5, 3); c < 0 || c > 2 {
		t.Errorf("negative seed gave class %d", c)
	}
}
