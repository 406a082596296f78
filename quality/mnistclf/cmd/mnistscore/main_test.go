package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
)

func TestRun(t *testing.T) {
	ds, err := data.Open(context.Background(), "mnist", data.Options{Split: data.Test, Size: 32, Resize: data.ResizePad})
	if err != nil {
		t.Skipf("MNIST not available: %v", err)
	}
	root := t.TempDir()
	// Write the first 3 test images of classes 7 and 2 into root/7 and root/2.
	for _, k := range []int{7, 2} {
		b := diffusion.NewBatch(3, 1, 32, 32)
		n := 0
		x := make([]float32, 32*32)
		for i := 0; n < 3; i++ {
			l, err := ds.Example(i, x)
			if err != nil {
				t.Fatal(err)
			}
			if l == k {
				copy(b.Data[n*1024:], x)
				n++
			}
		}
		if _, err := img.WriteEach(filepath.Join(root, string(rune('0'+k))), "", b); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := run([]string{root}, &out, os.Stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "all         6        6") {
		t.Fatalf("output:\n%s", out.String())
	}
	out.Reset()
	if err := run([]string{"-json", "2=" + filepath.Join(root, "2")}, &out, os.Stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"total": {`) {
		t.Fatalf("json output:\n%s", out.String())
	}
	for _, args := range [][]string{{}, {"12=" + root}, {t.TempDir()}} {
		if err := run(args, &out, &bytes.Buffer{}); err == nil {
			t.Fatalf("args %q accepted", args)
		}
	}
}
