package weights

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "m.safetensors")
	if err := WriteModel(model, tinyModel()); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(dir, "c.safetensors")
	c := &Checkpoint{Model: *tinyModel(), TrainState: json.RawMessage(`{"step":3}`),
		AdamM: map[string]Tensor{"conv_in.bias": {Shape: []int{4}, Data: seq(4)}}}
	if err := WriteCheckpoint(ckpt, c); err != nil {
		t.Fatal(err)
	}
	plainDir := t.TempDir()
	plain := filepath.Join(plainDir, "p.safetensors")
	if err := WriteFileAtomic(plain, &File{Tensors: map[string]Tensor{"x": {Shape: []int{2, 2}, Data: seq(4)}}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path           string
		format         Format
		configs        []string
		tensors        int
		params, extras int64
	}{
		{model, FormatModel, []string{MetaDiffusionConfig, MetaUNetConfig}, 2, 40, 0},
		{ckpt, FormatCheckpoint, []string{MetaDiffusionConfig, MetaTrainState, MetaUNetConfig}, 3, 40, 4},
		{plain, FormatSafetensors, nil, 1, 4, 0},
	}
	for _, tc := range tests {
		t.Run(tc.format.String(), func(t *testing.T) {
			info, err := Inspect(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for k := range info.Configs {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			if info.Format != tc.format || info.FormatName != tc.format.String() || !reflect.DeepEqual(keys, tc.configs) ||
				len(info.Tensors) != tc.tensors || info.NumParams != tc.params || info.NumExtraParams != tc.extras {
				t.Fatalf("got %+v", info)
			}
		})
	}
	if info, err := Inspect(model); err != nil || !reflect.DeepEqual(info.ClassNames, []string{"zero", "one"}) {
		t.Errorf("class names: %v %v", info, err)
	}
	if _, err := Inspect(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing path: %v", err)
	}
	os.WriteFile(plain, []byte("garbage!"), 0o644)
	if _, err := Inspect(plain); !errors.Is(err, ErrFormat) {
		t.Errorf("garbage: %v, want ErrFormat", err)
	}
}

func TestInspectDiffusersFixture(t *testing.T) {
	dir := fixtureDir(t)
	for _, p := range []string{dir, filepath.Join(dir, DiffusersWeights)} {
		info, err := Inspect(p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Format != FormatDiffusers || len(info.Tensors) != 182 || info.NumParams != 1112801 || info.Configs[DiffusersConfig] == nil {
			t.Fatalf("%s: format %v, %d tensors, %d params", p, info.Format, len(info.Tensors), info.NumParams)
		}
		if info.Tensors[0].Name != "conv_in.weight" {
			t.Errorf("first tensor %q, want file order starting with conv_in.weight", info.Tensors[0].Name)
		}
	}
}

// TestEmbeddedDefaultPath: weights.DefaultPath opens and inspects the
// embedded model like any path.
func TestEmbeddedDefaultPath(t *testing.T) {
	if _, err := Default(); err != nil {
		t.Skip(err)
	}
	src, err := Open(DefaultPath)
	if err != nil {
		t.Fatalf("Open(%q): %v", DefaultPath, err)
	}
	if src.Path != DefaultPath || len(src.Tensors) == 0 || len(src.UNetConfig) == 0 {
		t.Fatalf("Open(%q) = path %q, %d tensors", DefaultPath, src.Path, len(src.Tensors))
	}
	info, err := Inspect(DefaultPath)
	if err != nil {
		t.Fatalf("Inspect(%q): %v", DefaultPath, err)
	}
	if info.Format != FormatModel || info.NumParams != int64(src.NumParams()) {
		t.Fatalf("Inspect(%q): format %v, %d params; Open has %d", DefaultPath, info.Format, info.NumParams, src.NumParams())
	}
}
