package main

import (
	"fmt"
	"io"
	"time"
)

// progress prints a one-line progress bar, redrawn in place with \r, at
// most ten times a second.
type progress struct {
	w     io.Writer
	label string
	start time.Time
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer, label string) *progress {
	return &progress{w: w, label: label, start: time.Now()}
}

func (p *progress) update(step, total int) {
	now := time.Now()
	if step < total && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	const width = 30
	fill := width * step / max(total, 1)
	el := now.Sub(p.start).Seconds()
	rate := float64(step) / max(el, 1e-9)
	eta := time.Duration(float64(total-step)/max(rate, 1e-9)) * time.Second
	bar := make([]byte, width)
	for i := range bar {
		if i < fill {
			bar[i] = '='
		} else {
			bar[i] = ' '
		}
	}
	fmt.Fprintf(p.w, "\r%s [%s] %d/%d  %.1f it/s  ETA %s ", p.label, bar, step, total, rate, eta.Round(time.Second))
	p.drawn = true
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}
