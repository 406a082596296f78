package main

import (
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteLossPlot(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for s := 10; s <= 500; s += 10 {
		fmt.Fprintf(&b, "{\"step\":%d,\"loss\":%g}\n", s, 1/float64(s))
	}
	log := filepath.Join(dir, "log.jsonl")
	if err := os.WriteFile(log, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "loss.png")
	if err := writeLossPlot(log, out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("loss.png: %v", err)
	}
	if err := os.WriteFile(log, []byte("{\"step\":1,\"loss\":1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeLossPlot(log, out); err == nil {
		t.Error("one record: no error")
	}
}
