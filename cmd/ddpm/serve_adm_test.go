package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixtures"
	"github.com/ddpm-go/ddpm/server"
)

// Small random-weight guided-diffusion networks for ddpm serve: a
// class-conditional UNetModel over ImageNet's 1000 classes at 16x16 with
// learned variance (as 64x64_diffusion.pt), one with 4 classes and its
// noisy classifier, and an unconditional one (as
// 256x256_diffusion_uncond.pt).
const (
	admServeUncond     = "--image_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,1 --attention_resolutions 8 --num_heads 2 --learn_sigma True"
	admServeClass4     = admServeUncond + " --class_cond True --num_classes 4"
	admServeClassifier = "--image_size 16 --num_classes 4 --classifier_width 64 --classifier_depth 1 --classifier_channel_mult 1,1 " +
		"--classifier_attention_resolutions 8 --classifier_pool attention"
)

// postServe posts body to h's /v1/images/generations and returns the
// status and the answer.
func postServe(t *testing.T, h http.Handler, body map[string]any) (int, string) {
	t.Helper()
	ts := httptest.NewServer(h)
	defer ts.Close()
	b, _ := json.Marshal(body)
	r, err := http.Post(ts.URL+"/v1/images/generations", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	out, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(out)
}

// TestServeADMClassCond serves a class-conditional guided-diffusion
// UNetModel (upADMBase: 1000 classes, learned variance): /v1/models
// reports its size and ImageNet's class names; a request's PNGs for a
// seed and class (by label, or by name in the prompt) are byte-identical
// to ddpm sample --class's with the same seed, sampler and steps;
// guidance_scale > 0 is a 422 (no null class), 0 and 1 are served; a
// cluster's api replica describes it the same way.
func TestServeADMClassCond(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	base := upsampleModelFile(t, upADMBase, 1)
	gen, release, err := loadServeModel(ctx, serveOptions{model: base, device: "cpu"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	info := gen.Info()
	if info.Text || info.ImageSize != 16 || info.Channels != 3 || info.NumClasses != 1000 || !info.NoNullClass || info.DefaultSampler != "ddpm" {
		t.Fatalf("info %+v: want a 16x16 RGB model with 1000 classes, no null class, sampled with ddpm (learned variance)", info)
	}
	if len(info.ClassNames) != 1000 || info.ClassNames[207] != "golden retriever" {
		t.Fatalf("class names: %d, [207] %q; want ImageNet's 1000, 207 golden retriever", len(info.ClassNames), info.ClassNames[207])
	}

	cli := samplePNGs(t, "sample", "--model", base, "--class", "golden retriever", "--n", "2", "--steps", "2", "--seed", "5", "--sampler", "ddpm")
	srv := serveImages(t, gen, map[string]any{"n": 2, "seed": 5, "steps": 2, "sampler": "ddpm", "class_label": 207})
	if len(srv) != 2 || len(cli) != 2 {
		t.Fatalf("server %d images, sample %d; want 2", len(srv), len(cli))
	}
	for i := range srv {
		if !bytes.Equal(srv[i], cli[i]) {
			t.Errorf("image %d (seed %d, class 207): the server's PNG and ddpm sample's differ", i, 5+i)
		}
	}
	if bytes.Equal(srv[0], srv[1]) {
		t.Error("the two images are the same")
	}
	byName := serveImages(t, gen, map[string]any{"n": 1, "seed": 5, "steps": 2, "prompt": "a golden retriever", "guidance_scale": 1})
	if len(byName) != 1 || !bytes.Equal(byName[0], srv[0]) {
		t.Error(`prompt "a golden retriever" (default sampler ddpm, guidance 1): not class 207's image`)
	}
	if other := serveImages(t, gen, map[string]any{"n": 1, "seed": 5, "steps": 2, "class_label": 208}); bytes.Equal(other[0], srv[0]) {
		t.Error("class 208 gives class 207's image")
	}

	s, err := server.New(gen, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	meta := serveModelsMeta(t, s.Handler())
	names, _ := meta["class_names"].([]any)
	if meta["image_size"] != 16.0 || meta["channels"] != 3.0 || meta["num_classes"] != 1000.0 || len(names) != 1000 || names[207] != "golden retriever" || meta["no_null_class"] != true {
		t.Errorf("/v1/models: image_size %v, channels %v, num_classes %v, %d class names, no_null_class %v; want 16, 3, 1000, ImageNet's names, true",
			meta["image_size"], meta["channels"], meta["num_classes"], len(names), meta["no_null_class"])
	}
	code, msg := postServe(t, s.Handler(), map[string]any{"steps": 2, "class_label": 207, "guidance_scale": 3})
	if code != 422 || !strings.Contains(msg, "guidance_scale") || !strings.Contains(msg, "no null class") {
		t.Errorf("guidance_scale 3: status %d: %s; want 422 saying the model has no null class", code, msg)
	}
	code, msg = postServe(t, s.Handler(), map[string]any{"steps": 2, "class_label": 207, "classifier_scale": 1})
	if code != 422 || !strings.Contains(msg, "--classifier") {
		t.Errorf("classifier_scale without a classifier: status %d: %s; want 422", code, msg)
	}

	ri, err := serveModelInfo(ctx, serveOptions{model: base}, log)
	if err != nil || ri.ImageSize != 16 || ri.NumClasses != 1000 || !ri.NoNullClass || len(ri.ClassNames) != 1000 || ri.DefaultSampler != "ddpm" {
		t.Errorf("serveModelInfo: %+v, %v; want 16x16, 1000 named classes, no null class, ddpm", ri, err)
	}
}

// TestServeADMClassifier: ddpm serve --classifier guides a
// class-conditional guided-diffusion model with a noisy classifier, as
// ddpm sample --classifier --classifier-scale does (byte-identical PNGs);
// the scale changes the image; guidance_scale stays refused.
func TestServeADMClassifier(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	base, clf := upsampleModelFile(t, admServeClass4, 1), upsampleModelFile(t, admServeClassifier, 2)
	gen, release, err := loadServeModel(ctx, serveOptions{model: base, device: "cpu", classifier: clf}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	info := gen.Info()
	if info.NumClasses != 4 || info.ClassNames != nil || info.Classifier != modelName(clf) {
		t.Fatalf("info %+v: want 4 unnamed classes and the classifier %q", info, modelName(clf))
	}
	req := map[string]any{"n": 1, "seed": 3, "steps": 2, "sampler": "ddpm", "class_label": 2, "classifier_scale": 10}
	srv := serveImages(t, gen, req)
	cli := samplePNGs(t, "sample", "--model", base, "--classifier", clf, "--classifier-scale", "10", "--class", "2",
		"--n", "1", "--steps", "2", "--seed", "3", "--sampler", "ddpm")
	if len(srv) != 1 || len(cli) != 1 || !bytes.Equal(srv[0], cli[0]) {
		t.Errorf("classifier_scale 10: the server's PNG and ddpm sample --classifier's differ (%d and %d images)", len(srv), len(cli))
	}
	req["classifier_scale"] = 0
	if plain := serveImages(t, gen, req); bytes.Equal(plain[0], srv[0]) {
		t.Error("classifier_scale 0 gives scale 10's image: the classifier does not steer")
	}
	s, err := server.New(gen, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if code, msg := postServe(t, s.Handler(), map[string]any{"steps": 2, "class_label": 2, "guidance_scale": 2, "classifier_scale": 1}); code != 422 || !strings.Contains(msg, "no null class") {
		t.Errorf("guidance_scale 2 with a classifier: status %d: %s; want 422", code, msg)
	}
	ri, err := serveModelInfo(ctx, serveOptions{model: base, classifier: clf}, log)
	if err != nil || ri.Classifier != modelName(clf) || ri.NumClasses != 4 {
		t.Errorf("serveModelInfo: %+v, %v; want 4 classes and the classifier", ri, err)
	}
}

// TestServeADMUncond serves an unconditional guided-diffusion UNetModel
// (as 256x256_diffusion_uncond.pt): no classes in /v1/models, a PNG
// identical to ddpm sample's, class_label a 422; --classifier is refused
// at startup (the server guides class-conditional models).
func TestServeADMUncond(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	base := upsampleModelFile(t, admServeUncond, 1)
	gen, release, err := loadServeModel(ctx, serveOptions{model: base, device: "cpu"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if info := gen.Info(); info.NumClasses != 0 || info.ClassNames != nil || info.ImageSize != 16 || info.Text || info.DefaultSampler != "ddpm" {
		t.Fatalf("info %+v: want an unconditional 16x16 model sampled with ddpm", info)
	}
	srv := serveImages(t, gen, map[string]any{"n": 1, "seed": 4, "steps": 2, "sampler": "ddim"})
	cli := samplePNGs(t, "sample", "--model", base, "--n", "1", "--steps", "2", "--seed", "4", "--sampler", "ddim")
	if len(srv) != 1 || len(cli) != 1 || !bytes.Equal(srv[0], cli[0]) {
		t.Errorf("the server's PNG and ddpm sample's differ (%d and %d images)", len(srv), len(cli))
	}
	s, err := server.New(gen, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	meta := serveModelsMeta(t, s.Handler())
	if meta["num_classes"] != 0.0 || meta["class_names"] != nil || meta["image_size"] != 16.0 {
		t.Errorf("/v1/models: %v: want 16x16 without classes", meta)
	}
	if code, msg := postServe(t, s.Handler(), map[string]any{"steps": 2, "class_label": 1}); code != 422 || !strings.Contains(msg, "unconditional") {
		t.Errorf("class_label: status %d: %s; want 422", code, msg)
	}
	clf := upsampleModelFile(t, admServeClassifier, 2)
	if _, _, err := loadServeModel(ctx, serveOptions{model: base, device: "cpu", classifier: clf}, log); err == nil || !strings.Contains(err.Error(), "unconditional") {
		t.Errorf("--classifier on an unconditional model: %v; want an error saying it is unconditional", err)
	}
}

// TestServeADMRefused: guided-diffusion's upsamplers and classifiers are
// not served as --model; the message says what is, and where they go.
func TestServeADMRefused(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		name, flags, want string
	}{
		{"upsampler", upADMUp, "--upsample"},
		{"classifier", admServeClassifier, "--classifier"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := upsampleModelFile(t, c.flags, 1)
			for _, what := range []string{"loadServeModel", "serveModelInfo"} {
				var err error
				if what == "loadServeModel" {
					_, _, err = loadServeModel(ctx, serveOptions{model: path, device: "cpu"}, log)
				} else {
					_, err = serveModelInfo(ctx, serveOptions{model: path}, log)
				}
				if err == nil || !strings.Contains(err.Error(), "UNetModel: 64x64_diffusion.pt") || !strings.Contains(err.Error(), c.want) {
					t.Errorf("%s: err %v; want one naming the served models and %s", what, err, c.want)
				}
			}
		})
	}
}

// TestServeADMCheckpoint serves the shared fixtures' guided-diffusion
// model.pt (a small class-conditional 64x64 UNetModel saved by OpenAI's
// code): a request naming "golden retriever" gives ddpm sample --class
// "golden retriever"'s PNG.
func TestServeADMCheckpoint(t *testing.T) {
	model := filepath.Join(fixtures.Dir(t, "openai-small"), "adm", "model.pt")
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	gen, release, err := loadServeModel(ctx, serveOptions{model: model, device: "cpu"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if info := gen.Info(); info.ImageSize != 64 || info.NumClasses != 1000 || len(info.ClassNames) != 1000 || !info.NoNullClass {
		t.Fatalf("info %+v: want 64x64 with ImageNet's 1000 named classes and no null class", info)
	}
	srv := serveImages(t, gen, map[string]any{"n": 1, "seed": 7, "steps": 2, "prompt": "golden retriever"})
	cli := samplePNGs(t, "sample", "--model", model, "--class", "golden retriever", "--n", "1", "--steps", "2", "--seed", "7", "--sampler", "ddpm")
	if len(srv) != 1 || len(cli) != 1 || !bytes.Equal(srv[0], cli[0]) {
		t.Errorf("golden retriever: the server's PNG and ddpm sample's differ (%d and %d images)", len(srv), len(cli))
	}
}
