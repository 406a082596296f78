package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/server"
)

// TestServeGLIDE serves the small GLIDE fixture: a text model in
// /v1/models, a 2-step 32x32 image for a prompt with guidance through the
// HTTP handler, and a 422 for class_label; --classifier is refused.
func TestServeGLIDE(t *testing.T) {
	base, _ := glideModels(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	gen, release, err := loadServeModel(ctx, serveOptions{model: base, device: "cpu"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	info := gen.Info()
	if !info.Text || info.NumClasses != 0 || info.ImageSize != 32 || info.Channels != 3 || info.DefaultSampler != "ddpm" {
		t.Fatalf("info %+v: want a 32x32 RGB text model sampled with ddpm", info)
	}
	s, err := server.New(gen, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	post := func(body string) (*http.Response, []byte) {
		t.Helper()
		r, err := http.Post(ts.URL+"/v1/images/generations", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r, b
	}
	r, b := post(`{"prompt":"a corgi","steps":2,"seed":1,"guidance_scale":3}`)
	if r.StatusCode != 200 {
		t.Fatalf("status %d: %s", r.StatusCode, b)
	}
	var resp server.ImageResponse
	if err := json.Unmarshal(b, &resp); err != nil || len(resp.Data) != 1 {
		t.Fatalf("response %s: %v", b, err)
	}
	raw, err := base64.StdEncoding.DecodeString(resp.Data[0].B64JSON)
	if err != nil {
		t.Fatal(err)
	}
	im, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if im.Bounds().Dx() != 32 || im.Bounds().Dy() != 32 {
		t.Errorf("image %v, want 32x32", im.Bounds())
	}

	if r, b := post(`{"prompt":"a corgi","steps":2,"class_label":1}`); r.StatusCode != 422 || !strings.Contains(string(b), "class_label") {
		t.Errorf("class_label on GLIDE: status %d: %s", r.StatusCode, b)
	}
	if _, _, err := loadServeModel(ctx, serveOptions{model: base, device: "cpu", classifier: base}, log); err == nil || !strings.Contains(err.Error(), "--classifier") {
		t.Errorf("--classifier with GLIDE: %v", err)
	}
	// A cluster's api replica describes the model without loading it.
	ri, err := serveModelInfo(ctx, serveOptions{model: base}, log)
	if err != nil || !ri.Text || ri.ImageSize != 32 {
		t.Errorf("serveModelInfo: %+v, %v; want a 32x32 text model", ri, err)
	}
}
