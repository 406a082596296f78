package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/server/redistest"
)

// textToy is a toy text-to-image "network" bound to prompts: row r's eps
// is 0.1 x + 1e-4 t + 0.05 h, h a hash of the prompt of its label (0 for
// -1, the empty prompt). It records every bound prompt list and the
// prompts each model call's rows took.
type textToy struct {
	mu     sync.Mutex
	binds  [][]string
	rows   [][]string // per call, the prompt of each row ("" for -1)
	prompt []string   // of the current bind (set by bind)
}

func (m *textToy) bind(prompts []string) (diffusion.Model, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.binds = append(m.binds, slices.Clone(prompts))
	return &boundToy{m: m, prompts: slices.Clone(prompts)}, nil
}

type boundToy struct {
	m       *textToy
	prompts []string
}

func promptHash(p string) float64 {
	if p == "" {
		return 0
	}
	f := fnv.New32a()
	f.Write([]byte(p))
	return float64(f.Sum32()%1000)/1000 + 0.1
}

func (b *boundToy) Predict(_ context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
	if len(y) != x.N {
		return diffusion.Batch{}, fmt.Errorf("boundToy: %d labels for %d rows", len(y), x.N)
	}
	out := diffusion.NewBatch(x.N, x.C, x.H, x.W)
	d := x.C * x.H * x.W
	rows := make([]string, x.N)
	for r := range x.N {
		if y[r] < -1 || y[r] >= len(b.prompts) {
			return diffusion.Batch{}, fmt.Errorf("boundToy: label %d of %d prompts", y[r], len(b.prompts))
		}
		if y[r] >= 0 {
			rows[r] = b.prompts[y[r]]
		}
		h := promptHash(rows[r])
		for i := range d {
			out.Data[r*d+i] = float32(0.1*float64(x.Data[r*d+i]) + 1e-4*t[r] + 0.05*h)
		}
	}
	b.m.mu.Lock()
	b.m.rows = append(b.m.rows, rows)
	b.m.mu.Unlock()
	return out, nil
}

func newTextToyGen(t *testing.T) (*DiffusionGenerator, *textToy) {
	t.Helper()
	d, err := diffusion.New(diffusion.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewDiffusionGenerator(&toyModel{}, d, ModelInfo{Name: "toy-text", ImageSize: 4, Channels: 3, Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	m := &textToy{}
	if err := g.SetText(m.bind); err != nil {
		t.Fatal(err)
	}
	if !g.Info().Text {
		t.Fatal("SetText did not mark the model as a text model")
	}
	return g, m
}

// rgbaPix is an image's PNG encoding, to compare images byte for byte.
func rgbaPix(t *testing.T, im image.Image) []byte {
	t.Helper()
	if im == nil {
		t.Fatal("no image")
	}
	var b bytes.Buffer
	if err := png.Encode(&b, im); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestDiffusionGeneratorText: each image's prompt reaches the model for
// its rows (and the empty prompt for guidance's null rows); an image
// depends on its seed and prompt only, so batched and alone give the same
// bytes, and the same seed with another prompt gives another image.
func TestDiffusionGeneratorText(t *testing.T) {
	for _, w := range []float64{0, 3} {
		t.Run(fmt.Sprint("guidance ", w), func(t *testing.T) {
			g, m := newTextToyGen(t)
			set := Settings{Steps: 4, Sampler: diffusion.SamplerDDIM, Guidance: w}
			items := []Item{{Seed: 1, Class: -1, Prompt: "a cat"}, {Seed: 2, Class: -1, Prompt: "a dog"}, {Seed: 1, Class: -1, Prompt: "a dog"}}
			all, err := g.Generate(context.Background(), set, items, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(m.binds) != 1 || !slices.Equal(m.binds[0], []string{"a cat", "a dog", "a dog"}) {
				t.Fatalf("bound prompts %q, want one bind of the items' prompts", m.binds)
			}
			if len(m.rows) != set.Steps {
				t.Fatalf("%d model calls, want %d (one batch per step)", len(m.rows), set.Steps)
			}
			for _, rows := range m.rows {
				got := slices.Clone(rows)
				slices.Sort(got)
				want := []string{"a cat", "a dog", "a dog"}
				if w != 0 {
					want = []string{"", "", "", "a cat", "a dog", "a dog"}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("a model call's rows took prompts %q, want %q", rows, want)
				}
			}
			for i, it := range items {
				alone, err := g.Generate(context.Background(), set, []Item{it}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(rgbaPix(t, all[i]), rgbaPix(t, alone[0])) {
					t.Errorf("image %d (seed %d, %q): batched and alone differ", i, it.Seed, it.Prompt)
				}
			}
			if bytes.Equal(rgbaPix(t, all[0]), rgbaPix(t, all[2])) {
				t.Error("seed 1 gave the same image for \"a cat\" and \"a dog\"")
			}
			// The batch's order does not matter either.
			rev, err := g.Generate(context.Background(), set, []Item{items[2], items[1], items[0]}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rgbaPix(t, all[0]), rgbaPix(t, rev[2])) {
				t.Error("image (seed 1, \"a cat\") changed with the batch's order")
			}
		})
	}
}

// TestSetTextRefused: a text model has no classes and no classifier;
// info.Text is set by SetText only.
func TestSetTextRefused(t *testing.T) {
	g, _ := newToyGen(t, 3)
	if err := g.SetText(func([]string) (diffusion.Model, error) { return nil, nil }); err == nil {
		t.Error("SetText on a class-conditional model: no error")
	}
	d, _ := diffusion.New(diffusion.DefaultConfig())
	if _, err := NewDiffusionGenerator(&toyModel{}, d, ModelInfo{Name: "x", ImageSize: 4, Channels: 3, Text: true}); err == nil {
		t.Error("NewDiffusionGenerator with info.Text: no error")
	}
	tg, _ := newTextToyGen(t)
	if err := tg.SetClassifier("c", func(float64, []int) *diffusion.ClassifierGuidance { return nil }); err == nil {
		t.Error("SetClassifier on a text model: no error")
	}
}

// TestServeText: a text model's prompt reaches every image of the request
// through the HTTP API; /v1/models says it is a text model; class_label,
// classifier_scale and prompts over MaxPromptBytes are 422s naming the
// field.
func TestServeText(t *testing.T) {
	g, m := newTextToyGen(t)
	s := newTest(t, g, Options{})
	h := s.Handler()

	var models struct {
		Data []ModelObject `json:"data"`
	}
	if err := json.Unmarshal(do(t, h, "GET", "/v1/models", "").Body.Bytes(), &models); err != nil || len(models.Data) != 1 || !models.Data[0].DDPM.Text {
		t.Fatalf("/v1/models: %+v (%v), want text true", models, err)
	}

	w := do(t, h, "POST", "/v1/images/generations", `{"prompt":"a red car","n":2,"steps":2,"seed":5,"guidance_scale":3}`)
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	r := decodeImages(t, w.Body.Bytes())
	if len(r.Data) != 2 {
		t.Fatalf("%d images, want 2", len(r.Data))
	}
	if r.Data[0].ClassLabel != nil || r.Data[0].ClassSource != "" {
		t.Errorf("a text model's image has a class: %+v", r.Data[0])
	}
	m.mu.Lock()
	binds := slices.Clone(m.binds)
	m.mu.Unlock()
	if len(binds) != 1 || !slices.Equal(binds[0], []string{"a red car", "a red car"}) {
		t.Errorf("bound prompts %q, want [a red car a red car]", binds)
	}
	// The same seed and prompt again: the same bytes; another prompt: others.
	again := decodeImages(t, do(t, h, "POST", "/v1/images/generations", `{"prompt":"a red car","steps":2,"seed":6,"guidance_scale":3}`).Body.Bytes())
	if again.Data[0].B64JSON != r.Data[1].B64JSON {
		t.Error("seed 6 with the same prompt gave other bytes alone than as image 1 of a request")
	}
	other := decodeImages(t, do(t, h, "POST", "/v1/images/generations", `{"prompt":"a blue car","steps":2,"seed":5,"guidance_scale":3}`).Body.Bytes())
	if other.Data[0].B64JSON == r.Data[0].B64JSON {
		t.Error("another prompt gave the same image")
	}
	if w := do(t, h, "POST", "/v1/images/generations", `{"prompt":"`+strings.Repeat("x", MaxPromptBytes)+`","steps":1}`); w.Code != 200 {
		t.Errorf("a prompt of %d bytes: status %d: %s", MaxPromptBytes, w.Code, w.Body)
	}

	for _, tc := range []struct{ body, param string }{
		{`{"prompt":"a cat","class_label":3}`, "class_label"},
		{`{"prompt":"a cat","class_label":-1}`, "class_label"},
		{`{"prompt":"a cat","classifier_scale":2}`, "classifier_scale"},
		{`{"prompt":"` + strings.Repeat("x", MaxPromptBytes+1) + `"}`, "prompt"},
		{`{"prompt":"a cat","guidance_scale":-1}`, "guidance_scale"},
	} {
		for _, path := range []string{"/v1/images/generations", "/v1/jobs"} {
			w := do(t, h, "POST", path, tc.body)
			if w.Code != 422 {
				t.Errorf("%s %.60s: status %d, want 422", path, tc.body, w.Code)
				continue
			}
			e := apiErr(t, w)
			if e.Param == nil || *e.Param != tc.param || !strings.Contains(e.Message, tc.param) {
				t.Errorf("%s %.60s: error %+v (%q), want one naming %s", path, tc.body, e, e.Message, tc.param)
			}
		}
	}
}

// TestWireRequestPrompt: a cluster's stored request carries the prompt,
// and a worker without a text model refuses a job with one.
func TestWireRequestPrompt(t *testing.T) {
	g := genRequest{settings: Settings{Steps: 2, Sampler: diffusion.SamplerDDIM, Guidance: 3}, seeds: []int64{1, 2}, classes: []int{-1, -1}, prompt: "a corgi"}
	b, err := json.Marshal(toWire(g))
	if err != nil {
		t.Fatal(err)
	}
	var w wireRequest
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	back, err := w.gen()
	if err != nil {
		t.Fatal(err)
	}
	if back.prompt != "a corgi" || back.settings != g.settings {
		t.Errorf("round trip: %+v, want %+v", back, g)
	}
	text, _ := newTextToyGen(t)
	wk := &worker{s: &Server{info: text.Info()}}
	if err := wk.check(back, ""); err != nil {
		t.Errorf("a text worker refuses a text job: %v", err)
	}
	plain, _ := newToyGen(t, 0)
	wk = &worker{s: &Server{info: plain.Info()}}
	if err := wk.check(back, ""); err == nil {
		t.Error("an unconditional worker takes a job with a prompt and guidance")
	}
}

// TestClusterText: a prompt sent to a cluster's api replica reaches the
// worker's text model through the stored request.
func TestClusterText(t *testing.T) {
	rs := redistest.Start(t)
	g, m := newTextToyGen(t)
	api := newClusterTest(t, rs, nil, Options{}, ClusterOptions{Role: RoleAPI, Model: g.Info()})
	newClusterTest(t, rs, g, Options{}, ClusterOptions{Role: RoleWorker})
	ha := api.Handler()
	if w := do(t, ha, "POST", "/v1/jobs", `{"prompt":"a cat","class_label":1}`); w.Code != 422 {
		t.Errorf("class_label at a text cluster's api replica: status %d, want 422", w.Code)
	}
	w := do(t, ha, "POST", "/v1/jobs", `{"prompt":"a corgi","n":2,"steps":2,"seed":3,"guidance_scale":2}`)
	if w.Code != http.StatusAccepted {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	st := waitJob(t, ha, decodeStatus(t, w).ID)
	if st.State != StateSucceeded || st.Result == nil || len(st.Result.Data) != 2 {
		t.Fatalf("job: %+v", st)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.binds) != 1 || !slices.Equal(m.binds[0], []string{"a corgi", "a corgi"}) {
		t.Errorf("the worker bound %q, want [a corgi a corgi]", m.binds)
	}
}

// promptRecorder is a FakeGenerator for a text model that records the
// settings and prompts of each Generate call.
type promptRecorder struct {
	*FakeGenerator
	mu       sync.Mutex
	settings []Settings
	prompts  []string
}

func (p *promptRecorder) Generate(ctx context.Context, s Settings, items []Item, progress func(step, total int)) ([]image.Image, error) {
	p.mu.Lock()
	p.settings = append(p.settings, s)
	for _, it := range items {
		p.prompts = append(p.prompts, it.Prompt)
	}
	p.mu.Unlock()
	return p.FakeGenerator.Generate(ctx, s, items, progress)
}

// TestWebPageText: on a text model the page shows its text prompt box
// (and no class box) and sends the prompt and guidance.
func TestWebPageText(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser; skipped with -short")
	}
	f := NewFakeGenerator(16, 3, nil)
	f.Model.Text = true
	rec := &promptRecorder{FakeGenerator: f}
	s := newTest(t, rec, Options{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	dom := chromium(t, ts.URL+"/?autorun=1&n=2&steps=3&seed=5&guidance=2&prompt=a%20corgi", "--dump-dom")
	for _, want := range []string{`data-state="succeeded"`, `text-to-image`, `<label id="promptbox">text prompt`, `<label id="classbox" hidden="">`} {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q", want)
		}
	}
	if n := strings.Count(dom, `class="generated"`); n != 2 {
		t.Errorf("%d generated images in the DOM, want 2", n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.Equal(rec.prompts, []string{"a corgi", "a corgi"}) || len(rec.settings) != 1 || rec.settings[0].Guidance != 2 {
		t.Errorf("the generator got prompts %q, settings %+v; want a corgi twice with guidance 2", rec.prompts, rec.settings)
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}
