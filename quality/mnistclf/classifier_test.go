package mnistclf

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
)

// batchOf returns the first n examples of ds as a batch and their labels.
func batchOf(t *testing.T, ds data.Dataset, n int) (diffusion.Batch, []int) {
	t.Helper()
	c, h, w := ds.Shape()
	b := diffusion.NewBatch(n, c, h, w)
	y := make([]int, n)
	for i := range n {
		l, err := ds.Example(i, b.Data[i*c*h*w:(i+1)*c*h*w])
		if err != nil {
			t.Fatal(err)
		}
		y[i] = l
	}
	return b, y
}

func TestPretrainedAccuracy(t *testing.T) {
	c, err := Pretrained()
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{28, 32} {
		acc, err := c.Accuracy(context.Background(), mnist(t, data.Test, size))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%dx%d test accuracy %.4f", size, size, acc)
		if acc < 0.98 {
			t.Fatalf("%dx%d test accuracy %.4f < 0.98", size, size, acc)
		}
	}
}

func TestPredictCropsPadded(t *testing.T) {
	c, _ := Pretrained()
	b28, y := batchOf(t, mnist(t, data.Test, 28), 50)
	b32, _ := batchOf(t, mnist(t, data.Test, 32), 50)
	l28, err := c.Logits(b28)
	if err != nil {
		t.Fatal(err)
	}
	l32, err := c.Logits(b32)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(l28, l32) {
		t.Fatal("padded 32x32 input gives different logits from 28x28")
	}
	rep, err := c.Score(b28, y)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Total.N != 50 || rep.Total.Correct < 48 {
		t.Fatalf("report %+v", rep.Total)
	}
	sum := 0
	for k := range NumClasses {
		sum += rep.PerClass[k].N
		for j := range NumClasses {
			if j == k && rep.Confusion[k][j] != rep.PerClass[k].Correct {
				t.Fatalf("confusion diagonal %d != correct %d", rep.Confusion[k][j], rep.PerClass[k].Correct)
			}
		}
	}
	if sum != 50 || !strings.Contains(rep.String(), "all        50") {
		t.Fatalf("report:\n%s", rep)
	}
	var twice Report
	twice.Add(rep)
	twice.Add(rep)
	if twice.Total.N != 100 || twice.Total.Correct != 2*rep.Total.Correct {
		t.Fatal("Add")
	}
}

func TestInputErrors(t *testing.T) {
	c := New(1)
	for _, tc := range []struct {
		name string
		b    diffusion.Batch
		want string
	}{
		{"rgb", diffusion.NewBatch(1, 3, 28, 28), "want (N,1,28,28)"},
		{"size", diffusion.NewBatch(1, 1, 30, 30), "want (N,1,28,28)"},
		{"short", diffusion.Batch{N: 2, C: 1, H: 28, W: 28, Data: make([]float32, 784)}, "needs 1568"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Predict(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	b := diffusion.NewBatch(2, 1, 28, 28)
	if _, err := c.Score(b, []int{1}); err == nil {
		t.Fatal("label count mismatch accepted")
	}
	if _, err := c.Score(b, []int{1, 10}); err == nil || !strings.Contains(err.Error(), "allowed 0..9") {
		t.Fatalf("class 10: %v", err)
	}
}

func TestWeightsFile(t *testing.T) {
	c := New(9)
	var buf bytes.Buffer
	if err := c.Save(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	back, err := Load(bytes.NewReader(good))
	if err != nil || !slices.Equal(back.p, c.p) {
		t.Fatalf("round trip: %v", err)
	}
	// resum fixes the checksum after an edit, to reach the later checks.
	resum := func(b []byte) []byte {
		binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.ChecksumIEEE(b[:len(b)-4]))
		return b
	}
	edit := func(f func(b []byte)) []byte {
		b := slices.Clone(good)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "0 bytes"},
		{"truncated", good[:100], "100 bytes"},
		{"longer", append(slices.Clone(good), 0), "bytes, want"},
		{"magic", edit(func(b []byte) { b[0] = 'X' }), "magic"},
		{"flipped bit", edit(func(b []byte) { b[500] ^= 1 }), "checksum"},
		{"tensor count", resum(edit(func(b []byte) { b[8] = 7 })), "7 tensors"},
		{"tensor size", resum(edit(func(b []byte) { b[12] = 199 })), "tensor 0 has 199"},
		{"nan", resum(edit(func(b []byte) { binary.LittleEndian.PutUint32(b[16:], math.Float32bits(float32(math.NaN()))) })), "NaN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(bytes.NewReader(tc.in))
			if !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrWeights with %q", err, tc.want)
			}
		})
	}
}

func TestTrainSmall(t *testing.T) {
	full := mnist(t, data.Train, 32)
	ds := data.Head(full, 2000)
	test := data.Head(mnist(t, data.Test, 32), 1000)
	var losses []float64
	opts := TrainOptions{Epochs: 3, Batch: 16, Seed: 5, Workers: 2, Progress: func(_, _ int, l float64) { losses = append(losses, l) }}
	a, err := Train(context.Background(), ds, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(losses) != 3 || losses[2] >= losses[0] || losses[2] > 0.5 {
		t.Fatalf("loss did not fall: %v", losses)
	}
	opts.Progress = nil
	b, err := Train(context.Background(), ds, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.p, b.p) {
		t.Fatal("same seed and workers gave different weights")
	}
	acc, err := a.Accuracy(context.Background(), test)
	if err != nil {
		t.Fatal(err)
	}
	if acc < 0.85 {
		t.Fatalf("accuracy after 3 epochs of 2000 examples %.3f < 0.85", acc)
	}
	for _, tc := range []struct {
		name string
		ds   data.Dataset
		opts TrainOptions
		want string
	}{
		{"epochs", ds, TrainOptions{Epochs: -1}, "Epochs=-1"},
		{"lr", ds, TrainOptions{LR: 2}, "LR=2"},
		{"shift", ds, TrainOptions{Shift: 3}, "Shift=3"},
		{"batch", ds, TrainOptions{Batch: -4}, "Batch=-4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Train(context.Background(), tc.ds, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Train(ctx, ds, TrainOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestReadPNGDir(t *testing.T) {
	b, y := batchOf(t, mnist(t, data.Test, 32), 20)
	dir := t.TempDir()
	if _, err := img.WriteEach(dir, "", b); err != nil {
		t.Fatal(err)
	}
	got, paths, err := ReadPNGDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 20 || !slices.Equal(got.Data, b.Data) {
		t.Fatal("PNG round trip changed the images")
	}
	c, _ := Pretrained()
	p, _ := c.Predict(got)
	if !slices.Equal(p[:5], y[:5]) {
		t.Fatalf("predictions %v, labels %v", p[:5], y[:5])
	}
	if _, _, err := ReadPNGDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no .png") {
		t.Fatalf("empty dir: %v", err)
	}
}
