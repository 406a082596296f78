package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strconv"
)

// writeLossPlot reads a training log.jsonl and writes a PNG of the loss
// against the step (log scale), atomically.
func writeLossPlot(logPath, pngPath string) error {
	f, err := os.Open(logPath)
	if err != nil {
		return fmt.Errorf("loss plot: %w", err)
	}
	defer f.Close()
	var steps, losses []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r struct {
			Step int     `json:"step"`
			Loss float64 `json:"loss"`
		}
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Loss > 0 && !math.IsInf(r.Loss, 0) {
			steps, losses = append(steps, float64(r.Step)), append(losses, r.Loss)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("loss plot: %s: %w", logPath, err)
	}
	if len(steps) < 2 {
		return fmt.Errorf("loss plot: %s has fewer than two loss records", logPath)
	}
	img := plotLoss(steps, losses, 720, 400)
	tmp := pngPath + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("loss plot: %w", err)
	}
	if err := png.Encode(out, img); err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("loss plot: %w", err)
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("loss plot: %w", err)
	}
	return os.Rename(tmp, pngPath)
}

// plotLoss draws log10(loss) against the step with the schedule plot's
// axes, grid and labels.
func plotLoss(steps, losses []float64, w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fill(img, img.Bounds(), color.RGBA{255, 255, 255, 255})
	left, right, top, bottom := 70, w-30, 40, h-50
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range losses {
		lo, hi = math.Min(lo, math.Log10(v)), math.Max(hi, math.Log10(v))
	}
	lo, hi = math.Floor(lo*4)/4, math.Ceil(hi*4)/4
	if hi <= lo {
		hi = lo + 0.25
	}
	xMax := steps[len(steps)-1]
	px := func(s float64) float64 { return float64(left) + s/xMax*float64(right-left) }
	py := func(l float64) float64 { return float64(bottom) - (math.Log10(l)-lo)/(hi-lo)*float64(bottom-top) }
	for v := lo; v <= hi+1e-9; v += 0.25 {
		y := int(math.Round(float64(bottom) - (v-lo)/(hi-lo)*float64(bottom-top)))
		hline(img, left, right, y, plotGrid)
		label(img, left-8, y+4, strconv.FormatFloat(math.Pow(10, v), 'g', 3, 64), plotBlue, alignRight)
	}
	_, _, xs := niceRange(0, xMax)
	for s := 0.0; s <= xMax+xs/2; s += xs {
		x := int(math.Round(px(s)))
		vline(img, x, top, bottom, plotGrid)
		label(img, x, bottom+18, strconv.FormatFloat(s, 'f', -1, 64), plotInk, alignCenter)
	}
	hline(img, left, right, bottom, plotInk)
	hline(img, left, right, top, plotInk)
	vline(img, left, top, bottom, plotInk)
	vline(img, right, top, bottom, plotInk)
	label(img, (left+right)/2, h-12, "step", plotInk, alignCenter)
	label(img, (left+right)/2, top-14, "training loss (log scale)", plotInk, alignCenter)
	for i := 1; i < len(steps); i++ {
		thickLine(img, px(steps[i-1]), py(losses[i-1]), px(steps[i]), py(losses[i]), 1.2, plotBlue)
	}
	return img
}
