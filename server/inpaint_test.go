package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/server/redistest"
)

// pngB64 encodes im as a base64 PNG.
func pngB64(t *testing.T, im image.Image) string {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, im); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

// randomRGB is a w x h image of seeded random opaque colours.
func randomRGB(w, h int, seed uint64) *image.NRGBA {
	r := rand.New(rand.NewPCG(seed, 1))
	im := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(im.Pix); i += 4 {
		im.Pix[i], im.Pix[i+1], im.Pix[i+2], im.Pix[i+3] = uint8(r.IntN(256)), uint8(r.IntN(256)), uint8(r.IntN(256)), 255
	}
	return im
}

// halfMask is a w x h mask keeping (white) the left half and the top row,
// generating (black) the rest.
func halfMask(w, h int) *image.Gray {
	m := image.NewGray(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			if x < w/2 || y == 0 {
				m.SetGray(x, y, color.Gray{255})
			}
		}
	}
	return m
}

// pngHeaderOnly is a PNG whose IHDR declares w x h RGB pixels, followed by
// IEND and no pixel data: png.DecodeConfig reads it, png.Decode cannot.
func pngHeaderOnly(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString(pngSignature)
	chunk := func(typ string, data []byte) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(data)))
		b.Write(n[:])
		td := append([]byte(typ), data...)
		b.Write(td)
		binary.BigEndian.PutUint32(n[:], crc32.ChecksumIEEE(td))
		b.Write(n[:])
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	chunk("IHDR", ihdr)
	chunk("IEND", nil)
	return b.Bytes()
}

// TestInpaintValidation: each bad init_image or mask is a 400 (422 for a
// model that does not inpaint) naming the field, and a message saying what
// is allowed; a header declaring huge dimensions is refused from the
// header alone.
func TestInpaintValidation(t *testing.T) {
	s := newTest(t, nil, Options{}) // 8x8 gray
	img8 := pngB64(t, randomRGB(8, 8, 1))
	mask8 := pngB64(t, halfMask(8, 8))
	var jb bytes.Buffer
	if err := jpeg.Encode(&jb, randomRGB(8, 8, 2), nil); err != nil {
		t.Fatal(err)
	}
	jpg := base64.StdEncoding.EncodeToString(jb.Bytes())
	huge := base64.StdEncoding.EncodeToString(pngHeaderOnly(100000, 100000))
	wide := pngB64(t, image.NewGray(image.Rect(0, 0, MaxInputSide+1, 1)))
	corrupt := pngHeaderOnly(8, 8) // a header, then no pixels
	body := func(init, mask string) string {
		m := map[string]any{"steps": 2}
		if init != "" {
			m["init_image"] = init
		}
		if mask != "" {
			m["mask"] = mask
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	tests := []struct {
		name, body, param string
		status            int
		says              string // part of the message
	}{
		{"mask without init_image", body("", mask8), "mask", 400, "mask needs init_image"},
		{"init_image without mask", body(img8, ""), "mask", 400, "init_image needs a mask"},
		{"bad base64", body("not base64!", mask8), "init_image", 400, "not valid base64"},
		{"bad base64 mask", body(img8, "%%%"), "mask", 400, "not valid base64"},
		{"jpeg", body(jpg, mask8), "init_image", 400, "a JPEG, not a PNG"},
		{"jpeg mask", body(img8, jpg), "mask", 400, "only PNG"},
		{"text", body(base64.StdEncoding.EncodeToString([]byte("hello")), mask8), "init_image", 400, "not a PNG"},
		{"empty after data URL", body("data:image/png;base64,", mask8), "init_image", 400, "holds nothing"},
		{"jpeg data URL", body("data:image/jpeg;base64,"+jpg, mask8), "init_image", 400, `"data:image/png;base64,"`},
		{"huge header", body(huge, mask8), "init_image", 400, "100000x100000 pixels: allowed are 1 to 2048"},
		{"too wide", body(img8, wide), "mask", 400, "2049x1 pixels"},
		{"corrupt", body(base64.StdEncoding.EncodeToString(corrupt), mask8), "init_image", 400, "not a readable PNG"},
		{"mask size", body(pngB64(t, randomRGB(16, 16, 3)), pngB64(t, halfMask(12, 12))), "mask", 400, "init_image's size (16x16) or the model's (8x8)"},
		{"wrong type", `{"init_image":5,"mask":"x"}`, "init_image", 400, "not a string"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			w := do(t, s.Handler(), "POST", "/v1/images/generations", tc.body)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			e := apiErr(t, w)
			if e.Param == nil || *e.Param != tc.param {
				t.Errorf("param %v, want %q (%s)", e.Param, tc.param, e.Message)
			}
			if !strings.Contains(e.Message, tc.says) || !strings.Contains(e.Message, tc.param) {
				t.Errorf("message %q: want it to name %s and say %q", e.Message, tc.param, tc.says)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}

	// A model that does not inpaint refuses init_image (422).
	f := NewFakeGenerator(8, 1, nil)
	f.Model.Inpaint = false
	plain := newTest(t, f, Options{})
	w := do(t, plain.Handler(), "POST", "/v1/images/generations", body(img8, mask8))
	if e := apiErr(t, w); w.Code != 422 || e.Param == nil || *e.Param != "init_image" {
		t.Errorf("a model without inpainting: %d %s", w.Code, w.Body)
	}
	var m ModelObject
	if err := json.Unmarshal(do(t, plain.Handler(), "GET", "/v1/models/default", "").Body.Bytes(), &m); err != nil || m.DDPM.Inpaint {
		t.Errorf("/v1/models of a model without inpainting: inpaint %v, %v", m.DDPM.Inpaint, err)
	}
	if err := json.Unmarshal(do(t, s.Handler(), "GET", "/v1/models/default", "").Body.Bytes(), &m); err != nil || !m.DDPM.Inpaint {
		t.Errorf("/v1/models of an inpainting model: inpaint %v, %v", m.DDPM.Inpaint, err)
	}

	// Good inputs: plain base64, a data URL, an image larger than the
	// model's (fitted as ddpm sample fits it) with a mask of the model's
	// size or of its own.
	for _, b := range []string{
		body(img8, mask8),
		body("data:image/png;base64,"+img8, "data:image/PNG;base64,"+mask8),
		body(strings.TrimRight(img8, "="), mask8),
		body(pngB64(t, randomRGB(20, 12, 4)), mask8),
		body(pngB64(t, randomRGB(20, 12, 4)), pngB64(t, halfMask(20, 12))),
	} {
		if w := do(t, s.Handler(), "POST", "/v1/images/generations", b); w.Code != 200 {
			t.Errorf("%.60s...: %d %s", b, w.Code, w.Body)
		}
	}
}

// TestDefaultMaxBodyInpaint: the default body limit of a model that
// inpaints takes init_image and mask as uncompressed PNGs of its size.
func TestDefaultMaxBodyInpaint(t *testing.T) {
	const size = 96
	f := NewFakeGenerator(size, 3, nil)
	s := newTest(t, f, Options{})
	// Random pixels do not compress: about 4 S^2 bytes as RGBA.
	im := image.NewNRGBA(image.Rect(0, 0, size, size))
	r := rand.New(rand.NewPCG(5, 5))
	for i := range im.Pix {
		im.Pix[i] = uint8(r.IntN(256))
	}
	mk := image.NewNRGBA(image.Rect(0, 0, size, size))
	for i := range mk.Pix {
		mk.Pix[i] = uint8(r.IntN(256))
	}
	b, _ := json.Marshal(map[string]any{"steps": 1, "init_image": pngB64(t, im), "mask": pngB64(t, mk)})
	if int64(len(b)) <= 64<<10 {
		t.Fatalf("body of %d bytes: the test wants one over 64 KiB", len(b))
	}
	if w := do(t, s.Handler(), "POST", "/v1/images/generations", string(b)); w.Code != 200 {
		t.Errorf("%d-byte body (limit %d): %d %s", len(b), DefaultMaxBody(f.Info()), w.Code, w.Body)
	}
	f.Model.Inpaint = false
	if got := DefaultMaxBody(f.Info()); got != 64<<10 {
		t.Errorf("DefaultMaxBody without inpainting = %d, want 64 KiB", got)
	}
}

// newInpaintToy is a DiffusionGenerator over the toy model for size x size
// RGB images.
func newInpaintToy(t *testing.T, size int) *DiffusionGenerator {
	t.Helper()
	d, err := diffusion.New(diffusion.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewDiffusionGenerator(&toyModel{}, d, ModelInfo{Name: "toy", ImageSize: size, Channels: 3, Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	if !g.Info().Inpaint {
		t.Fatal("a DiffusionGenerator does not say Inpaint")
	}
	return g
}

// TestInpaintKeepsKnown: on a real sampler (the toy model), every image of
// an inpainting request keeps init_image where the mask is white, within
// 1/255 after the PNG round trip, and differs from it elsewhere; for the
// native samplers, RePaint (ddpm) and a diffusers solver.
func TestInpaintKeepsKnown(t *testing.T) {
	const size = 8
	s := newTest(t, newInpaintToy(t, size), Options{})
	init := randomRGB(size, size, 7)
	mask := halfMask(size, size)
	for _, sampler := range []string{"ddpm", "ddim", "euler", "dpm++2m"} {
		t.Run(sampler, func(t *testing.T) {
			b, _ := json.Marshal(map[string]any{"steps": 6, "n": 2, "seed": 3, "sampler": sampler,
				"init_image": "data:image/png;base64," + pngB64(t, init), "mask": pngB64(t, mask)})
			w := do(t, s.Handler(), "POST", "/v1/images/generations", string(b))
			if w.Code != 200 {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			r := decodeImages(t, w.Body.Bytes())
			if len(r.Data) != 2 {
				t.Fatalf("%d images", len(r.Data))
			}
			for i, d := range r.Data {
				raw, _ := base64.StdEncoding.DecodeString(d.B64JSON)
				im, _ := png.Decode(bytes.NewReader(raw))
				changed := 0
				for y := range size {
					for x := range size {
						gr, gg, gb, _ := im.At(x, y).RGBA()
						wr, wg, wb, _ := init.At(x, y).RGBA()
						diff := max(absDiff(gr>>8, wr>>8), absDiff(gg>>8, wg>>8), absDiff(gb>>8, wb>>8))
						if mask.GrayAt(x, y).Y == 255 {
							if diff > 1 {
								t.Errorf("image %d: kept pixel (%d, %d) = %d,%d,%d, init %d,%d,%d", i, x, y, gr>>8, gg>>8, gb>>8, wr>>8, wg>>8, wb>>8)
							}
						} else if diff > 1 {
							changed++
						}
					}
				}
				if changed == 0 {
					t.Errorf("image %d: the generated region is the init image", i)
				}
			}
		})
	}
}

func absDiff(a, b uint32) uint32 {
	if a > b {
		return a - b
	}
	return b - a
}

// TestInpaintBatchKey: requests with the same known image share a batch;
// one with another image, or none, never joins it; each job's images keep
// its own init image.
func TestInpaintBatchKey(t *testing.T) {
	f, calls := slowFake(time.Millisecond)
	f.Model.ImageSize, f.Model.Channels = 8, 3
	s := newTest(t, f, Options{BatchWindow: 300 * time.Millisecond})
	a, b := randomRGB(8, 8, 11), randomRGB(8, 8, 12)
	mask := pngB64(t, halfMask(8, 8))
	bodies := []string{
		fmt.Sprintf(`{"steps":2,"seed":1,"init_image":%q,"mask":%q}`, pngB64(t, a), mask),
		fmt.Sprintf(`{"steps":2,"seed":2,"init_image":%q,"mask":%q}`, pngB64(t, b), mask),
		fmt.Sprintf(`{"steps":2,"seed":3,"init_image":%q,"mask":%q}`, pngB64(t, a), mask),
		`{"steps":2,"seed":4}`,
	}
	want := []*image.NRGBA{a, b, a, nil}
	results := make([]ImageResponse, len(bodies))
	var wg sync.WaitGroup
	for i, body := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := do(t, s.Handler(), "POST", "/v1/images/generations", body)
			if w.Code != 200 {
				t.Errorf("request %d: %d %s", i, w.Code, w.Body)
				return
			}
			results[i] = decodeImages(t, w.Body.Bytes())
		}()
		waitQueue(t, s, i+1)
	}
	wg.Wait()
	var sizes []int
	for range 3 {
		select {
		case n := <-calls:
			sizes = append(sizes, n)
		case <-time.After(5 * time.Second):
			t.Fatalf("batches %v, want 3", sizes)
		}
	}
	sort.Ints(sizes)
	if !reflect.DeepEqual(sizes, []int{1, 1, 2}) {
		t.Errorf("batch sizes %v, want [1 1 2]: the two requests with init image a together, b and the plain one alone", sizes)
	}
	for i, r := range results {
		if t.Failed() || len(r.Data) != 1 {
			return
		}
		raw, _ := base64.StdEncoding.DecodeString(r.Data[0].B64JSON)
		im, _ := png.Decode(bytes.NewReader(raw))
		kr, kg, kb, _ := im.At(0, 0).RGBA() // kept by the mask
		if want[i] == nil {
			if kr>>8 != 255 || kb>>8 != 255 {
				t.Errorf("request %d (no image): pixel (0, 0) %d,%d,%d, want the fake's magenta", i, kr>>8, kg>>8, kb>>8)
			}
			continue
		}
		wr, wg, wb, _ := want[i].At(0, 0).RGBA()
		if kr != wr || kg != wg || kb != wb {
			t.Errorf("request %d: kept pixel (0, 0) %d,%d,%d, want its init image's %d,%d,%d", i, kr>>8, kg>>8, kb>>8, wr>>8, wg>>8, wb>>8)
		}
	}
}

// TestWireRequestInpaint: a cluster's stored request carries the known
// image bit for bit, with the same batch key; a worker whose model does not
// inpaint, or makes another size, refuses the job.
func TestWireRequestInpaint(t *testing.T) {
	info := NewFakeGenerator(8, 3, nil).Info()
	k, err := parseKnown(pngB64(t, randomRGB(8, 8, 21)), pngB64(t, halfMask(8, 8)), info)
	if err != nil {
		t.Fatal(err)
	}
	g := genRequest{settings: Settings{Steps: 2, Sampler: diffusion.SamplerDDIM, Inpaint: k.Key}, seeds: []int64{1}, classes: []int{-1}, known: k}
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
	if !reflect.DeepEqual(back, g) {
		t.Errorf("round trip: %+v, want %+v", back.settings, g.settings)
	}
	wk := &worker{s: &Server{info: info}}
	if err := wk.check(back, ""); err != nil {
		t.Errorf("an inpainting worker refuses the job: %v", err)
	}
	other := info
	other.ImageSize = 16
	wk = &worker{s: &Server{info: other}}
	if err := wk.check(back, ""); err == nil || !strings.Contains(err.Error(), "16x16") {
		t.Errorf("a 16x16 worker: %v", err)
	}
	other = info
	other.Inpaint = false
	wk = &worker{s: &Server{info: other}}
	if err := wk.check(back, ""); err == nil || !strings.Contains(err.Error(), "inpaint") {
		t.Errorf("a worker that does not inpaint: %v", err)
	}
	w.Mask = w.Mask[:3]
	if _, err := w.gen(); err == nil {
		t.Error("a stored mask of the wrong length: no error")
	}
}

// TestGenerateMixedKnown: a Generate call whose items have different known
// images (which the scheduler never forms) is an error, not a wrong image.
func TestGenerateMixedKnown(t *testing.T) {
	g := newInpaintToy(t, 4)
	k, err := parseKnown(pngB64(t, randomRGB(4, 4, 1)), pngB64(t, halfMask(4, 4)), g.Info())
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.Generate(context.Background(), Settings{Steps: 2, Sampler: diffusion.SamplerDDIM, Inpaint: k.Key},
		[]Item{{Seed: 1, Class: -1, Known: k}, {Seed: 2, Class: -1}}, nil)
	if err == nil {
		t.Error("items with and without a known image in one batch: no error")
	}
}

// knownRecorder is a fake that records the known image of every item.
type knownRecorder struct {
	*FakeGenerator
	mu    sync.Mutex
	known []*Known
}

func (r *knownRecorder) Generate(ctx context.Context, s Settings, items []Item, progress func(step, total int)) ([]image.Image, error) {
	r.mu.Lock()
	for _, it := range items {
		r.known = append(r.known, it.Known)
	}
	r.mu.Unlock()
	return r.FakeGenerator.Generate(ctx, s, items, progress)
}

// TestInpaintPageInBrowser loads the page in headless Chromium with
// ?inpaintdemo=1: the page chooses an image file (48x40, drawn scaled onto
// the 32x32 canvas), paints a stroke across the middle with pointer
// events and clicks Generate. The server gets init_image and a mask whose
// middle row is generated (black) and whose top and bottom are kept, and
// the page shows the images.
func TestInpaintPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser; skipped with -short")
	}
	f := NewFakeGenerator(32, 3, digits)
	f.StepDelay = time.Millisecond
	rec := &knownRecorder{FakeGenerator: f}
	s := newTest(t, rec, Options{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	dom := chromium(t, ts.URL+"/?autorun=1&inpaintdemo=1&n=2&steps=5&seed=5", "--dump-dom")
	for _, want := range []string{`<title>ddpm: done</title>`, `data-state="succeeded"`, `seed 5,`, `seed 6,`} {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q", want)
		}
	}
	if n := strings.Count(dom, `class="generated"`); n != 2 {
		t.Errorf("%d generated images in the DOM, want 2", n)
	}
	rec.mu.Lock()
	known := rec.known
	rec.mu.Unlock()
	if len(known) != 2 || known[0] == nil || known[1] != known[0] {
		t.Fatalf("the server got known images %v, want one for both images\nDOM:\n%s", known, dom)
	}
	k := known[0]
	const n = 32
	at := func(x, y int) float32 { return k.Mask.Data[y*n+x] }
	if at(n/2, n/2) != 0 || at(n/4, n/2) != 0 || at(n/2, 2) != 1 || at(n/2, n-3) != 1 || at(0, n/2) != 1 {
		t.Errorf("mask: middle %v, left-middle %v, top %v, bottom %v, left edge %v; want the stroke (0) across the middle only",
			at(n/2, n/2), at(n/4, n/2), at(n/2, 2), at(n/2, n-3), at(0, n/2))
	}
	// The demo image is a gradient: red grows to the right, green down.
	r := func(x, y int) uint8 { return img8(k.Image.Data[y*n+x]) }
	gr := func(x, y int) uint8 { return img8(k.Image.Data[n*n+y*n+x]) }
	if !(r(n-2, 2) > r(1, 2)+100 && gr(2, n-2) > gr(2, 1)+100) {
		t.Errorf("init image: red %d -> %d left to right, green %d -> %d top to bottom; want the demo's gradients",
			r(1, 2), r(n-2, 2), gr(2, 1), gr(2, n-2))
	}
}

func img8(v float32) uint8 { return uint8(min(255, max(0, (v+1)*127.5+0.5))) }

// TestInpaintPageServed: the web page has the inpainting section.
func TestInpaintPageServed(t *testing.T) {
	s := newTest(t, nil, Options{})
	w := do(t, s.Handler(), "GET", "/", "")
	for _, want := range []string{`id="inpaint"`, `id="canvas"`, "init_image", "mask"} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// TestClusterInpaint: through Redis (split api and worker replicas) an
// inpainting job reaches the worker with its known image bit for bit, and
// its images keep the init image where the mask is white.
func TestClusterInpaint(t *testing.T) {
	rs := redistest.Start(t)
	f := NewFakeGenerator(8, 3, nil)
	rec := &knownRecorder{FakeGenerator: f}
	api := newClusterTest(t, rs, nil, Options{}, ClusterOptions{Role: RoleAPI, Model: f.Info()})
	newClusterTest(t, rs, rec, Options{}, ClusterOptions{Role: RoleWorker})
	ha := api.Handler()
	init := randomRGB(8, 8, 31)
	mask := halfMask(8, 8)
	want, err := parseKnown(pngB64(t, init), pngB64(t, mask), f.Info())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"n": 2, "steps": 2, "seed": 1, "init_image": pngB64(t, init), "mask": pngB64(t, mask)})
	w := do(t, ha, "POST", "/v1/jobs", string(body))
	if w.Code != 202 {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	st := waitJob(t, ha, decodeStatus(t, w).ID)
	if st.State != StateSucceeded || st.Result == nil || len(st.Result.Data) != 2 {
		t.Fatalf("job: %+v", st)
	}
	rec.mu.Lock()
	known := rec.known
	rec.mu.Unlock()
	if len(known) != 2 || known[0] == nil || !reflect.DeepEqual(*known[0], *want) {
		t.Fatalf("the worker got known images %v, want the request's", known)
	}
	for i, d := range st.Result.Data {
		raw, _ := base64.StdEncoding.DecodeString(d.B64JSON)
		im, err := png.Decode(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		for y := range 8 {
			for x := range 8 {
				if mask.GrayAt(x, y).Y != 255 {
					continue
				}
				r, g, b, _ := im.At(x, y).RGBA()
				wr, wg, wb, _ := init.At(x, y).RGBA()
				if r != wr || g != wg || b != wb {
					t.Fatalf("image %d: kept pixel (%d, %d) differs from the init image", i, x, y)
				}
			}
		}
	}
}
