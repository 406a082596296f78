package weights

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
)

// defaultFS embeds the default/ folder; its model.safetensors, when
// present at build time, is the default model.
//
//go:embed default
var defaultFS embed.FS

// defaultModelPath is the embedded default model's path inside defaultFS.
const defaultModelPath = "default/model.safetensors"

// DefaultPath is the Source.Path OpenDefault reports.
const DefaultPath = "embedded:default"

// ErrNoDefaultModel is returned by Default and OpenDefault when the binary
// was built without weights/default/model.safetensors.
var ErrNoDefaultModel = errors.New("no default model is embedded yet; pass --model")

// Default returns the bytes of the embedded default model file, or
// ErrNoDefaultModel. The slice is shared; do not modify it.
func Default() ([]byte, error) {
	return defaultFrom(defaultFS)
}

// defaultFrom looks the default model up in fsys.
func defaultFrom(fsys fs.FS) ([]byte, error) {
	b, err := fs.ReadFile(fsys, defaultModelPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoDefaultModel
	}
	if err != nil {
		return nil, fmt.Errorf("embedded default model: %w", err)
	}
	return b, nil
}

// OpenDefault decodes the embedded default model, as Open does for a model
// file. It returns ErrNoDefaultModel when none is embedded.
func OpenDefault() (*Source, error) {
	b, err := Default()
	if err != nil {
		return nil, err
	}
	return openModelBytes(DefaultPath, b)
}

// openModelBytes decodes a ddpm model file or checkpoint held in memory.
func openModelBytes(name string, b []byte) (*Source, error) {
	f, err := readSelected(bytes.NewReader(b), int64(len(b)), func(n string) bool { return !isExtra(n) })
	if err != nil {
		return nil, fmt.Errorf("open model %s: %w", name, err)
	}
	return sourceFromModelFile(name, f)
}

// sourceFromModelFile decodes a ddpm model file or checkpoint read from
// name.
func sourceFromModelFile(name string, f *File) (*Source, error) {
	m, err := modelFromFile(f)
	if err != nil {
		return nil, fmt.Errorf("open model %s: %w", name, err)
	}
	format := FormatModel
	if _, ok := f.Metadata[MetaTrainState]; ok {
		format = FormatCheckpoint
	}
	return &Source{Path: name, Format: format, Model: *m, Metadata: f.Metadata}, nil
}
