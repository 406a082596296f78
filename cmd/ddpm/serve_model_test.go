package main

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/server"
)

// TestServeRealModel serves a real (tiny, class-conditional) UNet through
// the generator the server uses: classes exclude the null class, and
// guided DDIM images come back at the model's size, the same for the same seed.
func TestServeRealModel(t *testing.T) {
	path := tinyModelFile(t)
	gen, release, err := loadServeModel(context.Background(), serveOptions{model: path, device: "cpu"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	info := gen.Info()
	if info.NumClasses != 2 || info.ImageSize != 8 || len(info.ClassNames) != 2 {
		t.Fatalf("info: %d classes %v, size %d; want 2 classes (the null class is not one), size 8", info.NumClasses, info.ClassNames, info.ImageSize)
	}
	s := server.Settings{Steps: 4, Sampler: diffusion.SamplerDDIM, Guidance: 2}
	items := []server.Item{{Seed: 1, Class: 0}, {Seed: 2, Class: 1}, {Seed: 1, Class: 0}}
	imgs, err := gen.Generate(context.Background(), s, items, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 3 || imgs[0].Bounds().Dx() != 8 {
		t.Fatalf("got %d images", len(imgs))
	}
	a, c := imgs[0], imgs[2]
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			if a.At(x, y) != c.At(x, y) {
				t.Fatal("the same seed and class gave different images in one batch")
			}
		}
	}
	if _, _, err := loadServeModel(context.Background(), serveOptions{model: path, device: "cuda"}, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Error("--device cuda: no error")
	}
}
