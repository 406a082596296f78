package weights

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

const unetJSON = `{"_class_name": "UNet2DModel", "sample_size": 8, "block_out_channels": [4]}`

func tinyModel() *Model {
	return &Model{
		UNetConfig:      json.RawMessage(unetJSON),
		DiffusionConfig: json.RawMessage(`{"steps": 10}`),
		ClassNames:      []string{"zero", "one"},
		Tensors: map[string]Tensor{
			"conv_in.weight": {Shape: []int{4, 1, 3, 3}, Data: seq(36)},
			"conv_in.bias":   {Shape: []int{4}, Data: seq(4)},
		},
	}
}

func TestModelFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	m := tinyModel()
	if err := WriteModel(path, m); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Format != FormatModel || s.Path != path {
		t.Fatalf("format %v path %s", s.Format, s.Path)
	}
	var a, b any
	json.Unmarshal(s.UNetConfig, &a)
	json.Unmarshal([]byte(unetJSON), &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("unet config %s", s.UNetConfig)
	}
	if string(s.DiffusionConfig) != `{"steps":10}` || len(s.SchedulerConfig) != 0 {
		t.Errorf("diffusion config %q scheduler %q", s.DiffusionConfig, s.SchedulerConfig)
	}
	if !reflect.DeepEqual(s.ClassNames, m.ClassNames) {
		t.Errorf("class names %v", s.ClassNames)
	}
	if s.NumParams() != 40 || !reflect.DeepEqual(s.Tensors["conv_in.weight"].Data, m.Tensors["conv_in.weight"].Data) {
		t.Errorf("tensors differ")
	}
	if s.Metadata["format"] != "pt" {
		t.Errorf("metadata %v", s.Metadata)
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt.safetensors")
	c := &Checkpoint{
		Model:      *tinyModel(),
		Raw:        map[string]Tensor{"conv_in.bias": {Shape: []int{4}, Data: []float32{1, 2, 3, 4}}},
		AdamM:      map[string]Tensor{"conv_in.bias": {Shape: []int{4}, Data: []float32{5, 6, 7, 8}}},
		AdamV:      map[string]Tensor{"conv_in.bias": {Shape: []int{4}, Data: []float32{9, 9, 9, 9}}},
		TrainState: json.RawMessage(`{"step": 1200, "rng": [1, 2]}`),
	}
	if err := WriteCheckpoint(path, c); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Format != FormatCheckpoint || len(s.Tensors) != 2 {
		t.Fatalf("Open: format %v with %d tensors, want checkpoint with the 2 model tensors", s.Format, len(s.Tensors))
	}
	got, err := ReadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Raw["conv_in.bias"].Data, c.Raw["conv_in.bias"].Data) ||
		!reflect.DeepEqual(got.AdamM["conv_in.bias"].Data, c.AdamM["conv_in.bias"].Data) ||
		!reflect.DeepEqual(got.AdamV["conv_in.bias"].Data, c.AdamV["conv_in.bias"].Data) {
		t.Error("training state tensors differ")
	}
	if string(got.TrainState) != `{"step":1200,"rng":[1,2]}` {
		t.Errorf("train state %s", got.TrainState)
	}
	if len(got.Tensors) != 2 {
		t.Errorf("checkpoint model has %d tensors, want 2", len(got.Tensors))
	}
	// A model file is not a checkpoint.
	mpath := filepath.Join(t.TempDir(), "m.safetensors")
	if err := WriteModel(mpath, tinyModel()); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCheckpoint(mpath); err == nil || !strings.Contains(err.Error(), MetaTrainState) {
		t.Errorf("ReadCheckpoint(model file) = %v, want an error naming %s", err, MetaTrainState)
	}
}

func TestCorruptedCheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt.safetensors")
	if err := WriteCheckpoint(path, &Checkpoint{Model: *tinyModel(), TrainState: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"truncated", b[:len(b)-10]},
		{"header cut", b[:100]},
		{"bad length", append([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, b[8:]...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, open := range []func(string) error{
				func(p string) error { _, err := Open(p); return err },
				func(p string) error { _, err := ReadCheckpoint(p); return err },
			} {
				err := open(path)
				if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), path) {
					t.Errorf("error %v, want ErrFormat naming %s", err, path)
				}
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		m    func(*Model)
		want string
	}{
		{"no unet config", func(m *Model) { m.UNetConfig = nil }, "ddpm.unet_config is empty"},
		{"bad unet config", func(m *Model) { m.UNetConfig = json.RawMessage(`[1]`) }, "not a JSON object"},
		{"bad diffusion config", func(m *Model) { m.DiffusionConfig = json.RawMessage(`{`) }, "ddpm.diffusion_config"},
		{"prefixed tensor", func(m *Model) { m.Tensors["raw/x"] = Tensor{Shape: []int{1}, Data: seq(1)} }, "checkpoint prefix"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := tinyModel()
			tc.m(m)
			err := WriteModel(filepath.Join(t.TempDir(), "m.safetensors"), m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if err := WriteCheckpoint(filepath.Join(t.TempDir(), "c"), &Checkpoint{Model: *tinyModel()}); err == nil || !strings.Contains(err.Error(), MetaTrainState) {
		t.Errorf("checkpoint without train state: %v", err)
	}
}

func TestLoadDiffusersFixture(t *testing.T) {
	dir := fixtureDir(t)
	check := func(t *testing.T, s *Source, format Format) {
		t.Helper()
		if s.Format != format {
			t.Errorf("format %v, want %v", s.Format, format)
		}
		if len(s.Tensors) != 182 || s.NumParams() != 1112801 {
			t.Errorf("%d tensors, %d params; want 182, 1112801", len(s.Tensors), s.NumParams())
		}
		want, _ := os.ReadFile(filepath.Join(dir, "config.json"))
		if !bytes.Equal(s.UNetConfig, want) {
			t.Error("UNetConfig is not config.json's bytes")
		}
	}
	t.Run("folder", func(t *testing.T) {
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		check(t, s, FormatDiffusers)
		if len(s.SchedulerConfig) != 0 || len(s.DiffusionConfig) != 0 {
			t.Error("a model folder has no scheduler or diffusion config")
		}
	})
	t.Run("weights file", func(t *testing.T) {
		s, err := Open(filepath.Join(dir, DiffusersWeights))
		if err != nil {
			t.Fatal(err)
		}
		check(t, s, FormatDiffusers)
	})
	t.Run("pipeline", func(t *testing.T) {
		root := t.TempDir()
		abs, _ := filepath.Abs(dir)
		if err := os.Symlink(abs, filepath.Join(root, "unet")); err != nil {
			t.Skip("symlinks unsupported:", err)
		}
		sched, err := os.ReadFile(filepath.Join(dir, "..", "diffusers-scheduler", "ddpm_config", DiffusersScheduler))
		if err != nil {
			t.Skip("scheduler fixture absent:", err)
		}
		os.Mkdir(filepath.Join(root, "scheduler"), 0o755)
		os.WriteFile(filepath.Join(root, "scheduler", DiffusersScheduler), sched, 0o644)
		s, err := Open(root)
		if err != nil {
			t.Fatal(err)
		}
		check(t, s, FormatDiffusersPipeline)
		if !bytes.Equal(s.SchedulerConfig, sched) {
			t.Error("SchedulerConfig is not scheduler_config.json's bytes")
		}
	})
	t.Run("converted to a model file", func(t *testing.T) {
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "m.safetensors")
		if err := WriteModel(path, &s.Model); err != nil {
			t.Fatal(err)
		}
		m, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if m.Format != FormatModel || !reflect.DeepEqual(stripDType(m.Tensors), stripDType(s.Tensors)) {
			t.Fatal("model file differs from the diffusers folder")
		}
	})
}

func stripDType(m map[string]Tensor) map[string]Tensor {
	out := make(map[string]Tensor, len(m))
	for k, v := range m {
		v.DType = ""
		out[k] = v
	}
	return out
}

func TestOpenErrors(t *testing.T) {
	weightsFile := func(dir string) {
		var buf bytes.Buffer
		Write(&buf, &File{Tensors: map[string]Tensor{"w": {Shape: []int{1}, Data: seq(1)}}})
		os.WriteFile(filepath.Join(dir, DiffusersWeights), buf.Bytes(), 0o644)
	}
	tests := []struct {
		name  string
		setup func(dir string) string
		want  string
	}{
		{"missing", func(dir string) string { return filepath.Join(dir, "nope") }, "no such file"},
		{"empty dir", func(dir string) string { return dir }, "not a diffusers folder"},
		{"no weights", func(dir string) string {
			os.WriteFile(filepath.Join(dir, DiffusersConfig), []byte(`{}`), 0o644)
			return dir
		}, "has no diffusion_pytorch_model.safetensors"},
		{"pickle only", func(dir string) string {
			os.WriteFile(filepath.Join(dir, DiffusersConfig), []byte(`{}`), 0o644)
			os.WriteFile(filepath.Join(dir, diffusersPickle), []byte("x"), 0o644)
			return dir
		}, "PyTorch pickle"},
		{"bad config", func(dir string) string {
			os.WriteFile(filepath.Join(dir, DiffusersConfig), []byte(`{"a":`), 0o644)
			weightsFile(dir)
			return dir
		}, "config.json is not a JSON object"},
		{"bare safetensors", func(dir string) string {
			weightsFile(dir)
			return filepath.Join(dir, DiffusersWeights)
		}, "no \"ddpm.unet_config\" metadata"},
		{"bad class names", func(dir string) string {
			f, _ := tinyModel().File()
			f.Metadata[MetaClassNames] = `{"a":1}`
			p := filepath.Join(dir, "m.safetensors")
			WriteFileAtomic(p, f)
			return p
		}, "ddpm.class_names is not a JSON array"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.setup(t.TempDir())
			_, err := Open(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestCheckTensors(t *testing.T) {
	have := map[string]Tensor{
		"a": {Shape: []int{2, 3}},
		"b": {Shape: []int{4}},
		"x": {Shape: []int{1}},
		"y": {Shape: []int{1}},
	}
	tests := []struct {
		name string
		want map[string][]int
		err  *MismatchError
	}{
		{"match", map[string][]int{"a": {2, 3}, "b": {4}, "x": {1}, "y": {1}}, nil},
		{"all kinds", map[string][]int{"a": {3, 2}, "b": {4}, "c": {1}, "d": {5}}, &MismatchError{
			Missing:    []string{"c", "d"},
			Unexpected: []string{"x", "y"},
			Misshaped:  []ShapeMismatch{{Name: "a", Got: []int{2, 3}, Want: []int{3, 2}}},
		}},
		{"rank differs", map[string][]int{"a": {6}, "b": {4}, "x": {1}, "y": {1}}, &MismatchError{
			Misshaped: []ShapeMismatch{{Name: "a", Got: []int{2, 3}, Want: []int{6}}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckTensors(have, tc.want)
			if tc.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var me *MismatchError
			if !errors.As(err, &me) || !reflect.DeepEqual(me, tc.err) {
				t.Fatalf("got %#v, want %#v", err, tc.err)
			}
		})
	}
	err := CheckTensors(have, map[string][]int{"a": {3, 2}, "c": {1}})
	want := "weights do not match the model: 1 missing: c; 3 unexpected: b, x, y; 1 mis-shaped: a has shape [2 3], want [3 2]"
	if err == nil || err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}

func TestDefault(t *testing.T) {
	_, err := defaultFrom(fstest.MapFS{"default/README.md": {Data: []byte("x")}})
	if !errors.Is(err, ErrNoDefaultModel) {
		t.Fatalf("without a model: %v, want ErrNoDefaultModel", err)
	}
	if ErrNoDefaultModel.Error() != "no default model is embedded yet; pass --model" {
		t.Errorf("message %q", ErrNoDefaultModel)
	}
	f, err := tinyModel().File()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, f); err != nil {
		t.Fatal(err)
	}
	b, err := defaultFrom(fstest.MapFS{defaultModelPath: {Data: buf.Bytes()}})
	if err != nil || !bytes.Equal(b, buf.Bytes()) {
		t.Fatalf("with a model: %v", err)
	}
	s, err := openModelBytes(DefaultPath, b)
	if err != nil || s.Format != FormatModel || len(s.Tensors) != 2 {
		t.Fatalf("openModelBytes: %v %v", s, err)
	}
	// The real embedded folder: either a model that opens, or the typed error.
	if s, err := OpenDefault(); err != nil && !errors.Is(err, ErrNoDefaultModel) {
		t.Fatalf("OpenDefault: %v", err)
	} else if err == nil && len(s.Tensors) == 0 {
		t.Fatal("embedded default model has no tensors")
	}
}
