package data

import (
	"context"
	"testing"
)

// BenchmarkLoaderMNIST32 measures one batch of 128 MNIST images padded to
// 32x32 (the training input pipeline).
func BenchmarkLoaderMNIST32(b *testing.B) {
	ds, err := MNIST(Options{Size: 32, Resize: ResizePad})
	if err != nil {
		b.Skip(err)
	}
	l, _ := NewLoader(ds, 128, 1, LoaderOptions{Flip: true})
	x, y, _ := l.Next(context.Background())
	b.SetBytes(int64(4 * len(x.Data)))
	for b.Loop() {
		if err := l.NextInto(context.Background(), x, y); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoaderMNISTResize32 is the same with Catmull-Rom resizing 28->32.
func BenchmarkLoaderMNISTResize32(b *testing.B) {
	ds, err := MNIST(Options{Size: 32, Resize: ResizeScale})
	if err != nil {
		b.Skip(err)
	}
	l, _ := NewLoader(ds, 128, 1, LoaderOptions{})
	x, y, _ := l.Next(context.Background())
	b.SetBytes(int64(4 * len(x.Data)))
	for b.Loop() {
		if err := l.NextInto(context.Background(), x, y); err != nil {
			b.Fatal(err)
		}
	}
}
