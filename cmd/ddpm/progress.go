package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progress reports the steps of a long loop on stderr. On a terminal it is
// a one-line bar redrawn in place with \r at most ten times a second;
// anywhere else (a file, a pipe, a CI log) it prints plain lines, at most
// one every five seconds plus the last, so logs stay readable.
type progress struct {
	w     io.Writer
	label string
	tty   bool
	start time.Time
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer, label string) *progress {
	return &progress{w: w, label: label, tty: isTerminal(w), start: time.Now()}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (p *progress) update(step, total int) {
	now := time.Now()
	every := 100 * time.Millisecond
	if !p.tty {
		every = 5 * time.Second
	}
	if step < total && (p.drawn || !p.tty) && now.Sub(p.last) < every {
		return
	}
	if !p.tty && !p.drawn && step < total {
		// The first plain line waits a period too: short runs print one line.
		if p.last.IsZero() {
			p.last = now
			return
		}
	}
	p.last = now
	el := now.Sub(p.start).Seconds()
	rate := float64(step) / max(el, 1e-9)
	eta := time.Duration(float64(total-step)/max(rate, 1e-9)) * time.Second
	if !p.tty {
		fmt.Fprintf(p.w, "%s %d/%d  %.1f it/s  ETA %s\n", p.label, step, total, rate, eta.Round(time.Second))
		p.drawn = true
		return
	}
	const width = 30
	fill := width * step / max(total, 1)
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

// done ends the bar's line on a terminal.
func (p *progress) done() {
	if p.drawn && p.tty {
		fmt.Fprintln(p.w)
	}
}
