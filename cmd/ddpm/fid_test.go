package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
	"github.com/ddpm-go/ddpm/quality"
)

// TestFid scores 1000 random real training digits filed by class (near
// the floor, read correctly) and 200 noise images (far from it) against
// MNIST's test split.
func TestFid(t *testing.T) {
	ds, err := data.MNIST(data.Options{Split: data.Train, Size: 32, Resize: data.ResizePad})
	if err != nil {
		t.Skipf("MNIST not available: %v", err)
	}
	real, noise := t.TempDir(), t.TempDir()
	byClass := map[int][]float32{}
	x := make([]float32, 32*32)
	pick := rand.New(rand.NewPCG(7, 7))
	for range 1000 {
		y, err := ds.Example(pick.IntN(ds.Len()), x)
		if err != nil {
			t.Fatal(err)
		}
		byClass[y] = append(byClass[y], x...)
	}
	for k, v := range byClass {
		b := diffusion.Batch{N: len(v) / (32 * 32), C: 1, H: 32, W: 32, Data: v}
		if _, err := img.WriteEach(filepath.Join(real, fmt.Sprint(k)), "", b); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(1, 1))
	nb := diffusion.NewBatch(200, 1, 32, 32)
	for i := range nb.Data {
		nb.Data[i] = float32(r.Float64()*2 - 1)
	}
	if _, err := img.WriteEach(noise, "", nb); err != nil {
		t.Fatal(err)
	}
	score := func(dir string) quality.DigitScore {
		var so, se bytes.Buffer
		if err := run(context.Background(), []string{"fid", "--json", dir}, &so, &se); err != nil {
			t.Fatalf("fid %s: %v\n%s", dir, err, se.String())
		}
		var s quality.DigitScore
		if err := json.Unmarshal(so.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	rs, ns := score(real), score(noise)
	t.Logf("real digits: FD %.2f floor %.2f accuracy %.3f; noise: FD %.2f", rs.FD, rs.Floor, rs.Accuracy, ns.FD)
	if rs.N != 1000 || rs.Accuracy < 0.97 || rs.FD > 1.5*rs.Floor {
		t.Errorf("real digits: %+v: want accuracy >= 0.97 and FD within 1.5x the floor", rs)
	}
	if ns.Accuracy != -1 || ns.FD < 10*rs.Floor {
		t.Errorf("noise: %+v: want unknown classes and a distance far above the floor", ns)
	}
	if err := run(context.Background(), []string{"fid"}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("no DIR: no error")
	}
}
