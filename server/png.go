package server

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
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

// gridPad is the gap in pixels between the images of a grid.
const gridPad = 2

// grid lays imgs out in ceil(sqrt(n)) columns on a white background with
// gridPad pixels between them. One image is returned as it is. All images
// are assumed to have the size of the first.
func grid(imgs []image.Image) image.Image {
	if len(imgs) == 1 {
		return imgs[0]
	}
	cols := int(math.Ceil(math.Sqrt(float64(len(imgs)))))
	rows := (len(imgs) + cols - 1) / cols
	b := imgs[0].Bounds()
	w, h := b.Dx(), b.Dy()
	out := image.NewNRGBA(image.Rect(0, 0, cols*w+(cols-1)*gridPad, rows*h+(rows-1)*gridPad))
	draw.Draw(out, out.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	for i, img := range imgs {
		x, y := (i%cols)*(w+gridPad), (i/cols)*(h+gridPad)
		draw.Draw(out, image.Rect(x, y, x+w, y+h), img, img.Bounds().Min, draw.Src)
	}
	return out
}
