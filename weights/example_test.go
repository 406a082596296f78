package weights_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ddpm-go/ddpm/weights"
)

func ExampleWrite() {
	f := &weights.File{
		Metadata: map[string]string{"note": "example"},
		Tensors: map[string]weights.Tensor{
			"conv_in.bias": {Shape: []int{2}, Data: []float32{0.5, -1}},
		},
	}
	var buf bytes.Buffer
	if err := weights.Write(&buf, f); err != nil {
		fmt.Println(err)
		return
	}
	g, err := weights.Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		fmt.Println(err)
		return
	}
	t := g.Tensors["conv_in.bias"]
	fmt.Println(g.Metadata["note"], t.DType, t.Shape, t.Data)
	// Output: example F32 [2] [0.5 -1]
}

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "weights-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "model.safetensors")
	m := &weights.Model{
		UNetConfig:      json.RawMessage(`{"_class_name": "UNet2DModel", "in_channels": 1}`),
		DiffusionConfig: json.RawMessage(`{"num_timesteps": 1000}`),
		ClassNames:      []string{"0", "1"},
		Tensors: map[string]weights.Tensor{
			"conv_in.weight": {Shape: []int{4, 1, 3, 3}, Data: make([]float32, 36)},
		},
	}
	if err := weights.WriteModel(path, m); err != nil {
		fmt.Println(err)
		return
	}
	// Open also accepts diffusers folders and checkpoints.
	s, err := weights.Open(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.Format, s.NumParams(), string(s.UNetConfig), s.ClassNames)
	// Output: ddpm-model 36 {"_class_name":"UNet2DModel","in_channels":1} [0 1]
}

func ExampleCheckTensors() {
	have := map[string]weights.Tensor{
		"conv_in.weight": {Shape: []int{32, 3, 3, 3}},
		"extra.bias":     {Shape: []int{8}},
	}
	want := map[string][]int{
		"conv_in.weight": {32, 1, 3, 3},
		"conv_in.bias":   {32},
	}
	err := weights.CheckTensors(have, want)
	var me *weights.MismatchError
	fmt.Println(errors.As(err, &me))
	fmt.Println(err)
	// Output:
	// true
	// weights do not match the model: 1 missing: conv_in.bias; 1 unexpected: extra.bias; 1 mis-shaped: conv_in.weight has shape [32 3 3 3], want [32 1 3 3]
}

func ExampleDefault() {
	_, err := weights.Default()
	if errors.Is(err, weights.ErrNoDefaultModel) {
		fmt.Println("build without a default model")
		return
	}
	fmt.Println("default model embedded")
}
