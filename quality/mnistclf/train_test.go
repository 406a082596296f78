package mnistclf

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/data"
)

// mnist loads an MNIST split or skips the test.
func mnist(t *testing.T, split data.Split, size int) data.Dataset {
	t.Helper()
	opts := data.Options{Split: split}
	if size == 32 {
		opts.Size, opts.Resize = 32, data.ResizePad
	}
	ds, err := data.MNIST(opts)
	if err != nil {
		t.Skipf("MNIST not available: %v", err)
	}
	return ds
}

// TestTrainAndSave trains from scratch (about 1-2 minutes on 2 cores) and
// checks test-set accuracy >= 98%. With MNISTCLF_WRITE=1 it overwrites the
// committed clf.bin:
//
//	MNISTCLF_WRITE=1 go test -run TestTrainAndSave -v ./quality/mnistclf
func TestTrainAndSave(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for minutes; skipped with -short")
	}
	train := mnist(t, data.Train, 32)
	test := mnist(t, data.Test, 32)
	start := time.Now()
	c, err := Train(context.Background(), train, TrainOptions{Seed: 1, Progress: func(step, steps int, loss float64) {
		if step%500 == 0 {
			t.Logf("step %d/%d loss %.4f (%s)", step, steps, loss, time.Since(start).Round(time.Second))
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trained in %s", time.Since(start).Round(time.Second))
	acc, err := c.Accuracy(context.Background(), test)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("test accuracy %.4f", acc)
	if acc < 0.98 {
		t.Fatalf("test accuracy %.4f < 0.98", acc)
	}
	path := filepath.Join(t.TempDir(), "clf.bin")
	if os.Getenv("MNISTCLF_WRITE") == "1" {
		path = "clf.bin"
	}
	if err := c.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	back, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	acc2, err := back.Accuracy(context.Background(), test)
	if err != nil || acc2 != acc {
		t.Fatalf("reloaded accuracy %v (%v), want %v", acc2, err, acc)
	}
}
