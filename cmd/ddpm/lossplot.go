package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"

	"github.com/ddpm-go/ddpm/img/plot"
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
	c := plot.Chart{Title: "training loss (log scale)", XLabel: "step", YLabel: "loss", LogY: true, Width: 720, Height: 400,
		Series: []plot.Series{{Name: "loss", X: steps, Y: losses}}}
	if err := c.WritePNG(pngPath); err != nil {
		return fmt.Errorf("loss plot: %w", err)
	}
	return nil
}
