package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/weights"
)

func TestExportCheckpoint(t *testing.T) {
	model := tinyModelFile(t)
	src, err := weights.Open(model)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "ckpt.safetensors")
	c := &weights.Checkpoint{Model: src.Model, Raw: src.Tensors, AdamM: src.Tensors, AdamV: src.Tensors, TrainState: []byte(`{"step":1}`)}
	if err := weights.WriteCheckpoint(ckpt, c); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "m.safetensors")
	var so, se bytes.Buffer
	if err := run(context.Background(), []string{"export", ckpt, out}, &so, &se); err != nil {
		t.Fatal(err)
	}
	got, err := weights.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	if got.Format == src.Format && len(got.Tensors) != len(src.Tensors) {
		t.Errorf("exported %d tensors, want %d", len(got.Tensors), len(src.Tensors))
	}
	if _, err := weights.ReadCheckpoint(out); err == nil {
		t.Error("the exported model file still carries training state")
	}
	if err := run(context.Background(), []string{"export", ckpt}, &so, &se); err == nil {
		t.Error("one argument: no error")
	}
}
