package plot

import (
	"image/color"
	"math"
	"path/filepath"
	"testing"
)

// TestChart draws two series on log-log axes: the image has the size
// asked, each series' colour appears, and bad input is an error.
func TestChart(t *testing.T) {
	c := Chart{Title: "t", XLabel: "steps", YLabel: "FD", LogX: true, LogY: true, Series: []Series{
		{Name: "a", X: []float64{5, 10, 20, 50}, Y: []float64{40, 20, 10, 8}},
		{Name: "b", X: []float64{5, 10, 20, 50}, Y: []float64{30, 15, 9, 8.5}},
	}}
	im, err := c.Draw()
	if err != nil {
		t.Fatal(err)
	}
	if b := im.Bounds(); b.Dx() != 720 || b.Dy() != 420 {
		t.Fatalf("bounds %v", b)
	}
	seen := map[color.RGBA]bool{}
	for y := 0; y < 420; y++ {
		for x := 0; x < 720; x++ {
			seen[im.RGBAAt(x, y)] = true
		}
	}
	if !seen[Blue] || !seen[Orange] {
		t.Error("a series colour is missing")
	}
	if err := c.WritePNG(filepath.Join(t.TempDir(), "c.png")); err != nil {
		t.Fatal(err)
	}
	if _, err := (Chart{Series: []Series{{X: []float64{1}, Y: []float64{1, 2}}}}).Draw(); err == nil {
		t.Error("x and y of different lengths: no error")
	}
	if _, err := (Chart{Series: []Series{{X: []float64{math.NaN()}, Y: []float64{1}}}}).Draw(); err == nil {
		t.Error("no finite point: no error")
	}
	lo, hi, step := NiceRange(0.3, 9.1)
	if lo != 0 || hi != 10 || step != 2 {
		t.Errorf("NiceRange(0.3, 9.1) = %v %v %v", lo, hi, step)
	}
}
