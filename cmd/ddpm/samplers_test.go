package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/npy"
	"github.com/ddpm-go/ddpm/server"
)

// pipelineFixture is the diffusers pipeline with real diffusers 0.21.4
// sampling runs (testdata/diffusers-pipeline/README.md).
const pipelineFixture = "testdata/diffusers-pipeline"

// pipelineWith makes a copy of the fixture pipeline in a temporary folder
// whose scheduler/scheduler_config.json holds sched (the UNet is linked,
// not copied).
func pipelineWith(t *testing.T, sched []byte) string {
	t.Helper()
	root := t.TempDir()
	abs, err := filepath.Abs(pipelineFixture)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := os.ReadFile(filepath.Join(abs, "model_index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "model_index.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(abs, "unet"), filepath.Join(root, "unet")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "scheduler"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "scheduler", "scheduler_config.json"), sched, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// sampleRaw runs "ddpm sample" on model with the fixture's noise and
// labels and returns the --raw output.
func sampleRaw(t *testing.T, model string, steps int, extra ...string) []float32 {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "out.npy")
	args := append([]string{"sample", "--model", model, "--steps", fmt.Sprint(steps),
		"--noise", filepath.Join(pipelineFixture, "noise.npy"), "--class", "1,4,9", "--raw", raw,
		"--seed", "0", "--device", "cpu"}, extra...)
	var so, se bytes.Buffer
	if err := run(context.Background(), args, &so, &se); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, se.String())
	}
	a, err := npy.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if a.DType != npy.Float32 || !slices.Equal(a.Shape, []int{3, 3, 16, 16}) {
		t.Fatalf("--raw wrote %s %v, want float32 (3, 3, 16, 16)", a.DType, a.Shape)
	}
	if _, err := os.Stat("samples.png"); err == nil {
		t.Error("--raw without --out wrote samples.png")
	}
	return a.Float32s()
}

// relL2 is ||a - b|| / ||b||.
func relL2(a, b []float32) float64 {
	var num, den float64
	for i := range b {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return notNaN(math.Sqrt(num / den))
}

// notNaN is e, or +Inf where e is NaN (a NaN in the output under test), so
// that no "e > tol" check passes a NaN.
func notNaN(e float64) float64 {
	if math.IsNaN(e) {
		return math.Inf(1)
	}
	return e
}

func readFinal(t *testing.T, run string) []float32 {
	t.Helper()
	a, err := npy.ReadFile(filepath.Join(pipelineFixture, "runs", run, "final.npy"))
	if err != nil {
		t.Fatal(err)
	}
	return a.Float32s()
}

// TestSampleReproducesDiffusersPipelines runs the CLI on the fixture
// pipeline once per run folder, with that run's scheduler_config.json in
// place of the pipeline's, its step count, noise.npy and labels [1, 4, 9]:
// --raw must be diffusers' final sample to a relative L2 under 1e-3 (the
// float32 rounding floor is 1e-7 to 3e-5, the nearest other run 4e-3).
func TestSampleReproducesDiffusersPipelines(t *testing.T) {
	summary, err := os.ReadFile(filepath.Join(pipelineFixture, "runs", "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var runs map[string]struct {
		Class      string `json:"class"`
		Steps      int    `json:"steps"`
		ModelCalls int    `json:"model_calls"`
	}
	if err := json.Unmarshal(summary, &runs); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(runs))
	for k := range runs {
		names = append(names, k)
	}
	slices.Sort(names)
	if len(names) < 16 {
		t.Fatalf("%d runs in summary.json, want 16", len(names))
	}
	var report strings.Builder
	for _, name := range names {
		r := runs[name]
		t.Run(name, func(t *testing.T) {
			sched, err := os.ReadFile(filepath.Join(pipelineFixture, "runs", name, "scheduler_config.json"))
			if err != nil {
				t.Fatal(err)
			}
			got := sampleRaw(t, pipelineWith(t, sched), r.Steps)
			e := relL2(got, readFinal(t, name))
			fmt.Fprintf(&report, "\n%-16s %-30s %2d steps %2d calls  rel L2 %.2e", name, r.Class, r.Steps, r.ModelCalls, e)
			if !(e < 1e-3) {
				t.Errorf("relative L2 to diffusers' final.npy %.3g, want < 1e-3", e)
			}
		})
	}
	t.Log(report.String())
}

// TestSampleSamplerFlagOverridesPipeline: --sampler (and --karras) on the
// fixture pipeline (a DDPMScheduler) switch to the solver whose diffusers
// run used the class defaults with the pipeline's betas.
func TestSampleSamplerFlagOverridesPipeline(t *testing.T) {
	for _, c := range []struct {
		run  string
		args []string
	}{
		{"dpmpp_2m", []string{"--sampler", "dpm++2m"}},
		{"euler_karras", []string{"--sampler", "euler", "--karras"}},
	} {
		t.Run(c.run, func(t *testing.T) {
			got := sampleRaw(t, pipelineFixture, 10, c.args...)
			if e := relL2(got, readFinal(t, c.run)); !(e < 1e-3) {
				t.Errorf("%v: relative L2 to %s %.3g, want < 1e-3", c.args, c.run, e)
			}
		})
	}
	// --karras alone switches Karras sigmas on for the pipeline's own
	// scheduler.
	sched, err := os.ReadFile(filepath.Join(pipelineFixture, "runs", "dpmpp_2m", "scheduler_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	got := sampleRaw(t, pipelineWith(t, sched), 10, "--karras")
	if e := relL2(got, readFinal(t, "dpmpp_2m_karras")); !(e < 1e-3) {
		t.Errorf("--karras on a DPMSolverMultistep pipeline: relative L2 to dpmpp_2m_karras %.3g, want < 1e-3", e)
	}
}

// TestSampleSamplerErrors: bad scheduler configs, unknown sampler names
// and steps beyond the solver's limits are clear errors with a non-zero
// exit status.
func TestSampleSamplerErrors(t *testing.T) {
	badNoise := filepath.Join(t.TempDir(), "bad.npy")
	a, err := npy.NewFloat32([]int{2, 1, 16, 16}, make([]float32, 2*16*16))
	if err != nil {
		t.Fatal(err)
	}
	if err := npy.WriteFile(badNoise, a); err != nil {
		t.Fatal(err)
	}
	ddim, err := os.ReadFile(filepath.Join(pipelineFixture, "runs", "ddim_leading", "scheduler_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	withKey := func(key, val string) []byte {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(ddim, &m); err != nil {
			t.Fatal(err)
		}
		m[key] = json.RawMessage(val)
		b, _ := json.Marshal(m)
		return b
	}
	for _, c := range []struct {
		name  string
		sched []byte // replaces the pipeline's scheduler config when set
		args  []string
		want  []string
	}{
		{"unknown class", withKey("_class_name", `"FancyScheduler"`), nil, []string{"_class_name", "FancyScheduler"}},
		{"bad spacing", withKey("timestep_spacing", `"middle"`), nil, []string{"timestep_spacing", "middle"}},
		{"bad prediction", withKey("prediction_type", `"noise"`), nil, []string{"prediction_type", "noise"}},
		{"bad algorithm", []byte(`{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpm9"}`), nil, []string{"algorithm_type", "dpm9"}},
		{"unknown sampler", nil, []string{"--sampler", "plms"}, []string{"--sampler", "plms", "dpm++2m-sde"}},
		{"karras ddim", nil, []string{"--sampler", "ddim", "--karras"}, []string{"Karras"}},
		{"karras ddpm pipeline", nil, []string{"--karras"}, []string{"Karras", "DDPMScheduler"}},
		{"steps beyond T", nil, []string{"--steps", "1001"}, []string{"steps 1001", "1..1000"}},
		{"steps beyond T euler", nil, []string{"--sampler", "euler", "--steps", "1001"}, []string{"steps 1001"}},
		{"steps beyond T native", nil, []string{"--sampler", "ddim", "--steps", "1001"}, []string{"steps 1001"}},
		{"pndm runge-kutta steps", []byte(`{"_class_name": "PNDMScheduler"}`), []string{"--steps", "3"}, []string{"Runge-Kutta", "steps 3"}},
		{"leading offset", withKey("steps_offset", "5"), []string{"--steps", "1000"}, []string{"steps_offset 5", "1004"}},
		{"eta euler", nil, []string{"--sampler", "euler", "--eta", "0.5"}, []string{"eta"}},
		{"noise shape", nil, []string{"--noise", badNoise}, []string{"--noise", "(N, 3, 16, 16)"}},
		{"noise vs n", nil, []string{"--noise", filepath.Join(pipelineFixture, "noise.npy"), "--n", "4"}, []string{"--n 4", "3 images"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			model := pipelineFixture
			if c.sched != nil {
				model = pipelineWith(t, c.sched)
			}
			args := []string{"sample", "--model", model, "--class", "1", "--steps", "2", "--seed", "1",
				"--device", "cpu", "--out", filepath.Join(t.TempDir(), "x.png")}
			if !slices.Contains(c.args, "--noise") {
				args = append(args, "--n", "1")
			}
			args = append(args, c.args...)
			var so, se bytes.Buffer
			err := run(context.Background(), args, &so, &se)
			if err == nil || exitCode(err) == 0 {
				t.Fatalf("%v: err %v (exit %d), want a failure", c.args, err, exitCode(err))
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestSampleEverySamplerCLI samples two steps of every --sampler on the
// tiny model, plus img2img and inpainting with a diffusers solver.
func TestSampleEverySamplerCLI(t *testing.T) {
	model := tinyModelFile(t)
	dir := t.TempDir()
	for _, name := range samplerNames() {
		out := filepath.Join(dir, strings.ReplaceAll(name, "+", "p")+".png")
		var so, se bytes.Buffer
		args := []string{"sample", "--model", model, "--n", "2", "--steps", "3", "--seed", "1", "--sampler", name, "--out", out, "--device", "cpu"}
		if err := run(context.Background(), args, &so, &se); err != nil {
			t.Errorf("--sampler %s: %v\n%s", name, err, se.String())
		}
	}
	src := filepath.Join(dir, "init.png")
	mask := filepath.Join(dir, "mask.png")
	writeGray(t, src, 8, func(x, y int) uint8 { return uint8(30 * (x + y)) })
	writeGray(t, mask, 8, func(x, y int) uint8 { return uint8(255 * (x / 4)) })
	for _, extra := range [][]string{
		{"--init-image", src, "--strength", "0.6", "--sampler", "unipc"},
		{"--init-image", src, "--mask", mask, "--sampler", "heun"},
		{"--init-image", src, "--mask", mask, "--sampler", "ddim"},
		{"--init-image", src, "--mask", mask, "--sampler", "ddpm"},
	} {
		var so, se bytes.Buffer
		args := append([]string{"sample", "--model", model, "--n", "1", "--steps", "4", "--seed", "1", "--class", "1",
			"--out", filepath.Join(dir, "edit.png"), "--device", "cpu"}, extra...)
		if err := run(context.Background(), args, &so, &se); err != nil {
			t.Errorf("%v: %v\n%s", extra, err, se.String())
		}
	}
}

// writeGray writes a size x size grayscale PNG with pixel values f(x, y).
func writeGray(t *testing.T, path string, size int, f func(x, y int) uint8) {
	t.Helper()
	g := image.NewGray(image.Rect(0, 0, size, size))
	for y := range size {
		for x := range size {
			g.SetGray(x, y, color.Gray{Y: f(x, y)})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, g); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSamplerNamesDocumented: the web page's sampler dropdown, the README's
// "ddpm sample" row and HTTP "sampler" row, and --sampler's help list
// every sampler of the library.
func TestSamplerNamesDocumented(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("..", "..", "server", "web", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var sampleRow, apiRow string
	for _, line := range strings.Split(string(readme), "\n") {
		switch {
		case strings.HasPrefix(line, "| `ddpm sample` |"):
			sampleRow = line
		case strings.HasPrefix(line, "| `sampler` |"):
			apiRow = line
		}
	}
	for _, name := range samplerNames() {
		if !strings.Contains(string(page), "<option>"+name+"</option>") {
			t.Errorf("server/web/index.html: the sampler dropdown lacks %s", name)
		}
		if !strings.Contains(sampleRow, name+",") && !strings.Contains(sampleRow, name+";") {
			t.Errorf("README.md: the ddpm sample row lacks %s", name)
		}
		if !strings.Contains(apiRow, `"`+name+`"`) {
			t.Errorf("README.md: the HTTP sampler row lacks %s", name)
		}
		if !strings.Contains(samplerHelp, name) {
			t.Errorf("--sampler help lacks %s", name)
		}
	}
}

// TestServeEverySampler: the HTTP API's sampler field takes every name
// and the served model samples with it (batched items, guidance), each
// image the same as a batch of one with its seed.
func TestServeEverySampler(t *testing.T) {
	gen, release, err := loadServeModel(context.Background(), serveOptions{model: tinyModelFile(t), device: "cpu"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	srv, err := server.New(gen, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range samplerNames() {
		body := fmt.Sprintf(`{"n": 2, "steps": 3, "sampler": %q, "seed": 5, "class_label": 1, "guidance_scale": 2}`, name)
		req := httptest.NewRequest("POST", "/v1/images/generations", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, req)
		if w.Code != 200 {
			t.Errorf("sampler %s: status %d: %s", name, w.Code, w.Body.String())
		}
	}
	s := server.Settings{Steps: 3, Sampler: diffusion.SamplerDPMPP2MSDE, Guidance: 2}
	batch, err := gen.Generate(context.Background(), s, []server.Item{{Seed: 1, Class: 0}, {Seed: 2, Class: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	one, err := gen.Generate(context.Background(), s, []server.Item{{Seed: 2, Class: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for y := range 8 {
		for x := range 8 {
			if batch[1].At(x, y) != one[0].At(x, y) {
				t.Fatal("dpm++2m-sde: an image differs between a batch and alone")
			}
		}
	}
}
