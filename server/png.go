package server

import (
	"bytes"
	"fmt"
	"image"
	"image/png"

	"github.com/ddpm-go/ddpm/img"
)

// encodePNG encodes img as PNG with default compression.
func encodePNG(img image.Image) ([]byte, error) {
	if img == nil {
		return nil, fmt.Errorf("encode png: nil image")
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encode png: %w", err)
	}
	return buf.Bytes(), nil
}

// grid lays imgs out as every ddpm grid is laid out (img.DefaultGrid);
// one image is returned as it is. Images of different sizes (never from
// one generator) give nil, which encodePNG refuses.
func grid(imgs []image.Image) image.Image {
	g, err := img.GridImages(imgs, img.DefaultGrid)
	if err != nil {
		return nil
	}
	return g
}
