package weights

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Info describes what a weights file or folder holds, read from headers
// and configs only (no tensor data is read), for `ddpm inspect`.
type Info struct {
	// Path is the path given to Inspect.
	Path string `json:"path"`
	// Format is what Inspect found there.
	Format Format `json:"-"`
	// FormatName is Format.String(), for JSON output.
	FormatName string `json:"format"`
	// WeightsFile is the safetensors file whose header was read.
	WeightsFile string `json:"weights_file"`
	// Metadata is the safetensors "__metadata__" (Meta* keys included).
	Metadata map[string]string `json:"metadata"`
	// Configs holds the JSON configs found, by name: "config.json" and
	// "scheduler_config.json" for diffusers folders, the Meta* keys holding
	// JSON for model files and checkpoints.
	Configs map[string]json.RawMessage `json:"configs"`
	// ClassNames are the class labels of a class-conditional model file.
	ClassNames []string `json:"class_names,omitempty"`
	// NumTensors counts the tensors, checkpoint state included.
	NumTensors int `json:"num_tensors"`
	// Tensors lists every tensor in file order, checkpoint state included.
	Tensors []TensorInfo `json:"tensors,omitempty"`
	// NumParams counts the elements of the model tensors; NumExtraParams
	// those of a checkpoint's raw/, adam_m/ and adam_v/ tensors.
	NumParams      int64 `json:"num_params"`
	NumExtraParams int64 `json:"num_extra_params"`
}

// Inspect describes the weights at path (anything Open accepts, or any
// safetensors file), validating the header but reading no tensor data.
func Inspect(path string) (*Info, error) {
	if path == DefaultPath {
		b, err := Default()
		if err != nil {
			return nil, fmt.Errorf("inspect: %w", err)
		}
		return inspectBytes(path, b)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	info := &Info{Path: path, Configs: map[string]json.RawMessage{}}
	if st.IsDir() {
		l, err := findDiffusers(path)
		if err != nil {
			return nil, err
		}
		info.Format, info.WeightsFile = l.format, l.weights
		info.Configs[DiffusersConfig] = l.config
		if l.scheduler != nil {
			info.Configs[DiffusersScheduler] = l.scheduler
		}
	} else {
		info.Format, info.WeightsFile = FormatSafetensors, path
	}
	h, err := ReadHeaderFile(info.WeightsFile)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	return info.fromHeader(path, h)
}

// inspectBytes describes a model file held in memory (the embedded
// default model).
func inspectBytes(name string, b []byte) (*Info, error) {
	h, err := ReadHeader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", name, err)
	}
	info := &Info{Path: name, Format: FormatSafetensors, WeightsFile: name, Configs: map[string]json.RawMessage{}}
	return info.fromHeader(name, h)
}

// fromHeader fills the header-derived fields and classifies a single file.
func (info *Info) fromHeader(path string, h *Header) (*Info, error) {
	info.Metadata, info.Tensors, info.NumTensors = h.Metadata, h.Tensors, len(h.Tensors)
	if info.Metadata == nil {
		info.Metadata = map[string]string{}
	}
	if info.Format == FormatSafetensors {
		if err := info.classifyFile(); err != nil {
			return nil, fmt.Errorf("inspect %s: %w", path, err)
		}
	}
	for _, t := range info.Tensors {
		if isExtra(t.Name) {
			info.NumExtraParams += t.NumElements()
		} else {
			info.NumParams += t.NumElements()
		}
	}
	info.FormatName = info.Format.String()
	return info, nil
}

// classifyFile tells a model file or checkpoint from a plain or diffusers
// safetensors file and collects its configs.
func (info *Info) classifyFile() error {
	md := info.Metadata
	if _, ok := md[MetaUNetConfig]; ok {
		info.Format = FormatModel
		if _, ok := md[MetaTrainState]; ok {
			info.Format = FormatCheckpoint
		}
		for _, k := range []string{MetaUNetConfig, MetaDiffusionConfig, MetaSchedulerConfig, MetaTrainState} {
			v, ok := md[k]
			if !ok {
				continue
			}
			if !json.Valid([]byte(v)) {
				return fmt.Errorf("metadata %s is not valid JSON", k)
			}
			info.Configs[k] = json.RawMessage(v)
		}
		if s, ok := md[MetaClassNames]; ok {
			if err := json.Unmarshal([]byte(s), &info.ClassNames); err != nil {
				return fmt.Errorf("metadata %s is not a JSON array of strings: %v", MetaClassNames, err)
			}
		}
		return nil
	}
	cfg := filepath.Join(filepath.Dir(info.WeightsFile), DiffusersConfig)
	if b, err := os.ReadFile(cfg); err == nil {
		if err := checkConfig(cfg, b); err == nil {
			info.Format = FormatDiffusers
			info.Configs[DiffusersConfig] = b
		}
	}
	return nil
}
