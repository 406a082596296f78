// Package plot draws simple line charts into images (training loss,
// noise schedules, quality against sampling steps): anti-aliased lines,
// axes with 1-2-5 ticks, a grid, labels in a fixed 7x13 font and a legend.
// It draws only what ddpm's commands and benchmarks need.
package plot

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"math"
	"os"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/ddpm-go/ddpm/img"
)

// Colors of the palette (matplotlib's first colours) and of the frame.
var (
	Blue   = color.RGBA{31, 119, 180, 255}
	Orange = color.RGBA{230, 110, 20, 255}
	Green  = color.RGBA{44, 160, 44, 255}
	Red    = color.RGBA{214, 39, 40, 255}
	Purple = color.RGBA{148, 103, 189, 255}
	Brown  = color.RGBA{140, 86, 75, 255}
	Pink   = color.RGBA{227, 119, 194, 255}
	Gray   = color.RGBA{127, 127, 127, 255}
	Olive  = color.RGBA{188, 189, 34, 255}
	Cyan   = color.RGBA{23, 190, 207, 255}
	GridC  = color.RGBA{225, 225, 225, 255}
	Ink    = color.RGBA{40, 40, 40, 255}
	White  = color.RGBA{255, 255, 255, 255}
)

// Palette is the order series take colours in.
var Palette = []color.RGBA{Blue, Orange, Green, Red, Purple, Brown, Pink, Gray, Olive, Cyan}

// Series is one line of a chart.
type Series struct {
	Name string
	X, Y []float64
	Dots bool // mark each point (for a few measured points, not a long curve)
}

// Chart is a line chart: every series against one x and one y axis,
// either of which may be logarithmic.
type Chart struct {
	Title, XLabel, YLabel string
	LogX, LogY            bool
	Series                []Series
	Width, Height         int // 0: 720 x 420
}

// Draw renders the chart.
func (c Chart) Draw() (*image.RGBA, error) {
	w, h := c.Width, c.Height
	if w == 0 {
		w, h = 720, 420
	}
	cv := NewCanvas(w, h)
	tx := func(v float64) float64 { return v }
	ty := tx
	if c.LogX {
		tx = math.Log10
	}
	if c.LogY {
		ty = math.Log10
	}
	xlo, xhi, ylo, yhi := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		if len(s.X) != len(s.Y) {
			return nil, fmt.Errorf("plot: series %q has %d x and %d y values", s.Name, len(s.X), len(s.Y))
		}
		for i := range s.X {
			x, y := tx(s.X[i]), ty(s.Y[i])
			if math.IsNaN(x) || math.IsInf(x, 0) || math.IsNaN(y) || math.IsInf(y, 0) {
				continue
			}
			xlo, xhi, ylo, yhi = math.Min(xlo, x), math.Max(xhi, x), math.Min(ylo, y), math.Max(yhi, y)
		}
	}
	if math.IsInf(xlo, 0) {
		return nil, fmt.Errorf("plot: no finite points")
	}
	xlo, xhi, xs := NiceRange(xlo, xhi)
	ylo, yhi, ys := NiceRange(ylo, yhi)
	left, right, top, bottom := 80, w-30, 40, h-50
	if len(c.Series) > 1 {
		right = w - 170 // room for the legend
	}
	px := func(v float64) float64 { return float64(left) + (tx(v)-xlo)/(xhi-xlo)*float64(right-left) }
	py := func(v float64) float64 { return float64(bottom) - (ty(v)-ylo)/(yhi-ylo)*float64(bottom-top) }
	tick := func(v float64, log bool) string {
		if log {
			return strconv.FormatFloat(math.Pow(10, v), 'g', 3, 64)
		}
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
	for v := ylo; v <= yhi+ys/2; v += ys {
		y := int(math.Round(float64(bottom) - (v-ylo)/(yhi-ylo)*float64(bottom-top)))
		cv.HLine(left, right, y, GridC)
		cv.Label(left-8, y+4, tick(v, c.LogY), Ink, AlignRight)
	}
	for v := xlo; v <= xhi+xs/2; v += xs {
		x := int(math.Round(float64(left) + (v-xlo)/(xhi-xlo)*float64(right-left)))
		cv.VLine(x, top, bottom, GridC)
		cv.Label(x, bottom+18, tick(v, c.LogX), Ink, AlignCenter)
	}
	cv.Box(left, top, right, bottom, Ink)
	cv.Label((left+right)/2, h-12, c.XLabel, Ink, AlignCenter)
	cv.Label((left+right)/2, top-14, c.Title, Ink, AlignCenter)
	cv.Label(8, top-14, c.YLabel, Ink, AlignLeft)
	for k, s := range c.Series {
		col := Palette[k%len(Palette)]
		for i := 1; i < len(s.X); i++ {
			cv.Line(px(s.X[i-1]), py(s.Y[i-1]), px(s.X[i]), py(s.Y[i]), 1.2, col)
		}
		for i := range s.X {
			if s.Dots {
				x, y := px(s.X[i]), py(s.Y[i])
				cv.Line(x, y, x, y, 2.2, col)
			}
		}
		if len(c.Series) > 1 {
			y := float64(top + 10 + 18*k)
			cv.Line(float64(right+12), y, float64(right+32), y, 1.3, col)
			cv.Label(right+38, int(y)+4, s.Name, Ink, AlignLeft)
		}
	}
	return cv.RGBA, nil
}

// WritePNG draws the chart and writes it to path atomically.
func (c Chart) WritePNG(path string) error {
	im, err := c.Draw()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := img.EncodePNG(&buf, im); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return os.Rename(tmp, path)
}

// NiceRange widens [lo, hi] to multiples of a 1-2-5 step giving about 5
// ticks.
func NiceRange(lo, hi float64) (nlo, nhi, step float64) {
	if !(hi > lo) {
		lo, hi = lo-1, hi+1
	}
	raw := (hi - lo) / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step = 10 * mag
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	return math.Floor(lo/step) * step, math.Ceil(hi/step) * step, step
}

// Canvas is an RGBA image with the drawing primitives of the charts.
type Canvas struct{ *image.RGBA }

// NewCanvas returns a white w x h canvas.
func NewCanvas(w, h int) Canvas {
	c := Canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	c.Fill(c.Bounds(), White)
	return c
}

// Fill paints r.
func (c Canvas) Fill(r image.Rectangle, col color.RGBA) {
	r = r.Intersect(c.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c.SetRGBA(x, y, col)
		}
	}
}

// HLine draws a one-pixel horizontal line.
func (c Canvas) HLine(x0, x1, y int, col color.RGBA) { c.Fill(image.Rect(x0, y, x1+1, y+1), col) }

// VLine draws a one-pixel vertical line.
func (c Canvas) VLine(x, y0, y1 int, col color.RGBA) { c.Fill(image.Rect(x, y0, x+1, y1+1), col) }

// Box draws a rectangle's outline.
func (c Canvas) Box(x0, y0, x1, y1 int, col color.RGBA) {
	c.HLine(x0, x1, y0, col)
	c.HLine(x0, x1, y1, col)
	c.VLine(x0, y0, y1, col)
	c.VLine(x1, y0, y1, col)
}

// Line draws an anti-aliased segment of half-width r: each pixel near the
// segment is blended with coverage falling off linearly over one pixel
// beyond r.
func (c Canvas) Line(x0, y0, x1, y1, r float64, col color.RGBA) {
	minX, maxX := int(math.Floor(math.Min(x0, x1)-r-1)), int(math.Ceil(math.Max(x0, x1)+r+1))
	minY, maxY := int(math.Floor(math.Min(y0, y1)-r-1)), int(math.Ceil(math.Max(y0, y1)+r+1))
	b := c.Bounds()
	dx, dy := x1-x0, y1-y0
	l2 := dx*dx + dy*dy
	for y := max(minY, b.Min.Y); y <= min(maxY, b.Max.Y-1); y++ {
		for x := max(minX, b.Min.X); x <= min(maxX, b.Max.X-1); x++ {
			cx, cy := float64(x)+0.5, float64(y)+0.5
			u := 0.0
			if l2 > 0 {
				u = math.Max(0, math.Min(1, ((cx-x0)*dx+(cy-y0)*dy)/l2))
			}
			ex, ey := cx-(x0+u*dx), cy-(y0+u*dy)
			a := math.Max(0, math.Min(1, r+0.5-math.Hypot(ex, ey)))
			if a == 0 {
				continue
			}
			o := c.RGBAAt(x, y)
			mix := func(p, q uint8) uint8 { return uint8(math.Round(float64(p)*(1-a) + float64(q)*a)) }
			c.SetRGBA(x, y, color.RGBA{mix(o.R, col.R), mix(o.G, col.G), mix(o.B, col.B), 255})
		}
	}
}

// Align is the horizontal alignment of a label at its x.
type Align int

// The alignments.
const (
	AlignLeft Align = iota
	AlignCenter
	AlignRight
)

// Label draws text with its baseline at y, aligned at x.
func (c Canvas) Label(x, y int, text string, col color.RGBA, a Align) {
	d := &font.Drawer{Dst: c.RGBA, Src: image.NewUniform(col), Face: basicfont.Face7x13}
	wd := d.MeasureString(text).Round()
	switch a {
	case AlignCenter:
		x -= wd / 2
	case AlignRight:
		x -= wd
	}
	d.Dot = fixed.P(x, y)
	d.DrawString(text)
}
