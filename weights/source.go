package weights

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Format names the kind of weights source Open found.
type Format int

// The formats Open accepts.
const (
	// FormatDiffusers is a diffusers model folder: config.json +
	// diffusion_pytorch_model.safetensors.
	FormatDiffusers Format = iota + 1
	// FormatDiffusersPipeline is a diffusers pipeline root with unet/ and
	// optionally scheduler/ subfolders.
	FormatDiffusersPipeline
	// FormatModel is a ddpm model file.
	FormatModel
	// FormatCheckpoint is a ddpm training checkpoint.
	FormatCheckpoint
	// FormatSafetensors is a plain safetensors file with no model
	// configuration (Inspect only; Open rejects it).
	FormatSafetensors
)

// String returns the format's name as the CLI prints it.
func (f Format) String() string {
	switch f {
	case FormatDiffusers:
		return "diffusers"
	case FormatDiffusersPipeline:
		return "diffusers-pipeline"
	case FormatModel:
		return "ddpm-model"
	case FormatCheckpoint:
		return "ddpm-checkpoint"
	case FormatSafetensors:
		return "safetensors"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// File names inside diffusers folders.
const (
	// DiffusersConfig is a diffusers model folder's config JSON.
	DiffusersConfig = "config.json"
	// DiffusersWeights is a diffusers model folder's safetensors weights.
	DiffusersWeights = "diffusion_pytorch_model.safetensors"
	// DiffusersScheduler is the scheduler config inside a pipeline's
	// scheduler/ folder.
	DiffusersScheduler = "scheduler_config.json"

	diffusersWeightsFP16 = "diffusion_pytorch_model.fp16.safetensors"
	diffusersPickle      = "diffusion_pytorch_model.bin"
	pipelineUNetDir      = "unet"
	pipelineSchedulerDir = "scheduler"
)

// Source is a model loaded by Open, with where it came from.
type Source struct {
	// Path is the path given to Open.
	Path string
	// Format is what Open found there.
	Format Format
	// Model holds the configs and the model tensors; a checkpoint's training
	// state tensors are not loaded.
	Model
	// Metadata is the safetensors metadata of the weights file (for model
	// files and checkpoints it includes the Meta* keys).
	Metadata map[string]string
}

// Open loads a model from path, which may be a diffusers model folder, a
// diffusers pipeline root (unet/ + scheduler/), a diffusers weights file
// with config.json beside it, a ddpm model file or a ddpm checkpoint (whose
// EMA weights are the model; its training state is skipped, see
// ReadCheckpoint). DefaultPath ("embedded:default") opens the embedded
// default model. A path that does not exist but is a Hugging Face Hub id
// ("org/name" or "org/name@revision") is resolved through the Hub cache
// as OpenHub does, downloading if needed, with progress on stderr. Errors
// name the path and say what was expected there.
func Open(path string) (*Source, error) {
	if path == DefaultPath {
		return OpenDefault()
	}
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) && isHubCandidate(path) {
		return openHub(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	if st.IsDir() {
		return LoadDiffusers(path)
	}
	f, err := readFileSelected(path, func(name string) bool { return !isExtra(name) })
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	if _, ok := f.Metadata[MetaUNetConfig]; !ok {
		// A diffusers weights file named directly: use its folder's config.
		cfg := filepath.Join(filepath.Dir(path), DiffusersConfig)
		b, err := os.ReadFile(cfg)
		if err != nil {
			return nil, fmt.Errorf("open model %s: no %q metadata (not a ddpm model file) and no readable %s beside it (not a diffusers folder)", path, MetaUNetConfig, DiffusersConfig)
		}
		if err := checkConfig(cfg, b); err != nil {
			return nil, err
		}
		return &Source{Path: path, Format: FormatDiffusers, Metadata: f.Metadata,
			Model: Model{UNetConfig: b, Tensors: f.Tensors}}, nil
	}
	return sourceFromModelFile(path, f)
}

// LoadDiffusers loads a diffusers UNet2DModel folder (config.json +
// diffusion_pytorch_model.safetensors, or the .fp16 variant) or a pipeline
// root whose unet/ subfolder is one; for a pipeline, scheduler/
// scheduler_config.json is returned in SchedulerConfig when present.
// config.json is returned as read (it must be a JSON object).
func LoadDiffusers(dir string) (*Source, error) {
	l, err := findDiffusers(dir)
	if err != nil {
		return nil, err
	}
	f, err := ReadFile(l.weights)
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	return &Source{Path: dir, Format: l.format, Metadata: f.Metadata,
		Model: Model{UNetConfig: l.config, SchedulerConfig: l.scheduler, Tensors: f.Tensors}}, nil
}

// diffusersLayout is what findDiffusers located in a diffusers folder.
type diffusersLayout struct {
	format    Format
	weights   string // path of the safetensors file
	config    []byte // config.json
	scheduler []byte // scheduler/scheduler_config.json of a pipeline, or nil
}

// findDiffusers locates and reads the configs of a diffusers model folder
// or pipeline root, without reading the weights.
func findDiffusers(dir string) (*diffusersLayout, error) {
	l := &diffusersLayout{format: FormatDiffusers}
	unet := dir
	if !isFile(filepath.Join(dir, DiffusersConfig)) {
		unet = filepath.Join(dir, pipelineUNetDir)
		if !isFile(filepath.Join(unet, DiffusersConfig)) {
			return nil, fmt.Errorf("open model %s: not a diffusers folder (no %s) nor a pipeline (no %s/%s)", dir, DiffusersConfig, pipelineUNetDir, DiffusersConfig)
		}
		l.format = FormatDiffusersPipeline
		sched := filepath.Join(dir, pipelineSchedulerDir, DiffusersScheduler)
		b, err := os.ReadFile(sched)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("open model: %w", err)
		default:
			// diffusers saves with Python's json module, which writes
			// -Infinity, Infinity and NaN bare (DPMSolver's
			// lambda_min_clipped is -Infinity): they are allowed here and
			// the bytes kept as written for the scheduler config parser.
			if err := checkConfig(sched, quotePythonFloats(b)); err != nil {
				return nil, err
			}
			l.scheduler = b
		}
	}
	cfgPath := filepath.Join(unet, DiffusersConfig)
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	if err := checkConfig(cfgPath, cfg); err != nil {
		return nil, err
	}
	l.config = cfg
	l.weights = filepath.Join(unet, DiffusersWeights)
	if !isFile(l.weights) {
		switch alt := filepath.Join(unet, diffusersWeightsFP16); {
		case isFile(alt):
			l.weights = alt
		case isFile(filepath.Join(unet, diffusersPickle)):
			return nil, fmt.Errorf("open model %s: only %s (a PyTorch pickle) is present; convert it to %s (safetensors), pickles are not loaded", unet, diffusersPickle, DiffusersWeights)
		default:
			return nil, fmt.Errorf("open model %s: %s has no %s", dir, unet, DiffusersWeights)
		}
	}
	return l, nil
}

// checkConfig requires a config file to be a JSON object.
func checkConfig(path string, b []byte) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return fmt.Errorf("open model: %s is not a JSON object: %v", path, err)
	}
	return nil
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

// quotePythonFloats returns b with the bare NaN, Infinity and -Infinity
// tokens Python's json module writes turned into JSON strings, leaving
// string contents alone.
func quotePythonFloats(b []byte) []byte {
	var out bytes.Buffer
	inStr, esc := false, false
next:
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
		case c == '"':
			inStr = true
		default:
			for _, lit := range []string{"-Infinity", "Infinity", "NaN"} {
				if bytes.HasPrefix(b[i:], []byte(lit)) {
					out.WriteString(`"` + lit + `"`)
					i += len(lit) - 1
					continue next
				}
			}
		}
		out.WriteByte(c)
	}
	return out.Bytes()
}
