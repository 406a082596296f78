package weights

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Metadata keys of ddpm model files and checkpoints.
const (
	// MetaUNetConfig holds the diffusers UNet2DModel config JSON.
	MetaUNetConfig = "ddpm.unet_config"
	// MetaDiffusionConfig holds package diffusion's config JSON (opaque here).
	MetaDiffusionConfig = "ddpm.diffusion_config"
	// MetaSchedulerConfig holds a diffusers scheduler_config.json, kept when
	// a diffusers pipeline is converted to a model file.
	MetaSchedulerConfig = "ddpm.scheduler_config"
	// MetaClassNames holds a JSON array of class names, index = label.
	MetaClassNames = "ddpm.class_names"
	// MetaTrainState holds the trainer's state JSON (opaque here); its
	// presence makes a file a checkpoint.
	MetaTrainState = "ddpm.train_state"
)

// Tensor name prefixes of the training state in a checkpoint. The EMA
// weights use the plain diffusers names, so a checkpoint loads as a model.
const (
	PrefixRaw   = "raw/"    // the optimised (non-EMA) weights
	PrefixAdamM = "adam_m/" // Adam first moments
	PrefixAdamV = "adam_v/" // Adam second moments
)

// isExtra reports whether a tensor name belongs to a checkpoint's training
// state rather than to the model.
func isExtra(name string) bool { return hasPrefix(name, PrefixRaw, PrefixAdamM, PrefixAdamV) }

// Model is a UNet's weights and configuration, whatever file it came from.
type Model struct {
	// UNetConfig is the diffusers UNet2DModel config JSON (config.json).
	UNetConfig json.RawMessage
	// DiffusionConfig is package diffusion's config JSON; empty when the
	// source has none (diffusers folders).
	DiffusionConfig json.RawMessage
	// SchedulerConfig is a diffusers scheduler_config.json; empty when the
	// source has none.
	SchedulerConfig json.RawMessage
	// ClassNames names the class labels of a class-conditional model.
	ClassNames []string
	// Tensors maps diffusers parameter names to weights.
	Tensors map[string]Tensor
}

// NumParams returns the total number of elements of m's tensors.
func (m *Model) NumParams() int {
	n := 0
	for _, t := range m.Tensors {
		n += t.NumElements()
	}
	return n
}

// checkJSON validates an optional JSON object for metadata key key and
// returns it compacted.
func checkJSON(key string, v json.RawMessage, required bool) (string, error) {
	if len(bytes.TrimSpace(v)) == 0 {
		if required {
			return "", fmt.Errorf("%s is empty, want a JSON object", key)
		}
		return "", nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(v, &obj); err != nil {
		return "", fmt.Errorf("%s is not a JSON object: %v", key, err)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return "", fmt.Errorf("%s: %v", key, err)
	}
	return b.String(), nil
}

// metadata encodes m's configuration as safetensors metadata.
func (m *Model) metadata() (map[string]string, error) {
	md := map[string]string{"format": "pt"}
	for _, kv := range []struct {
		key      string
		v        json.RawMessage
		required bool
	}{
		{MetaUNetConfig, m.UNetConfig, true},
		{MetaDiffusionConfig, m.DiffusionConfig, false},
		{MetaSchedulerConfig, m.SchedulerConfig, false},
	} {
		s, err := checkJSON(kv.key, kv.v, kv.required)
		if err != nil {
			return nil, err
		}
		if s != "" {
			md[kv.key] = s
		}
	}
	if len(m.ClassNames) > 0 {
		b, err := json.Marshal(m.ClassNames)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", MetaClassNames, err)
		}
		md[MetaClassNames] = string(b)
	}
	return md, nil
}

// File encodes m as a ddpm model file. UNetConfig must be a JSON object;
// the other configs are optional; tensor names may not use the checkpoint
// prefixes.
func (m *Model) File() (*File, error) {
	md, err := m.metadata()
	if err != nil {
		return nil, fmt.Errorf("encode model: %w", err)
	}
	f := &File{Metadata: md, Tensors: make(map[string]Tensor, len(m.Tensors))}
	for name, t := range m.Tensors {
		if isExtra(name) {
			return nil, fmt.Errorf("encode model: tensor %q uses a checkpoint prefix (%s, %s, %s)", name, PrefixRaw, PrefixAdamM, PrefixAdamV)
		}
		t.DType = ""
		f.Tensors[name] = t
	}
	return f, nil
}

// modelFromFile decodes a model file's metadata; the extras of a
// checkpoint are skipped.
func modelFromFile(f *File) (*Model, error) {
	m := &Model{Tensors: make(map[string]Tensor, len(f.Tensors))}
	for name, t := range f.Tensors {
		if !isExtra(name) {
			m.Tensors[name] = t
		}
	}
	if _, ok := f.Metadata[MetaUNetConfig]; !ok {
		return nil, fmt.Errorf("metadata lacks %q: not a ddpm model file", MetaUNetConfig)
	}
	for _, kv := range []struct {
		key      string
		dst      *json.RawMessage
		required bool
	}{
		{MetaUNetConfig, &m.UNetConfig, true},
		{MetaDiffusionConfig, &m.DiffusionConfig, false},
		{MetaSchedulerConfig, &m.SchedulerConfig, false},
	} {
		v := f.Metadata[kv.key]
		if _, err := checkJSON("metadata "+kv.key, json.RawMessage(v), kv.required); err != nil {
			return nil, err
		}
		if v != "" {
			*kv.dst = json.RawMessage(v)
		}
	}
	if s, ok := f.Metadata[MetaClassNames]; ok {
		if err := json.Unmarshal([]byte(s), &m.ClassNames); err != nil {
			return nil, fmt.Errorf("metadata %s is not a JSON array of strings: %v", MetaClassNames, err)
		}
	}
	return m, nil
}

// WriteModel writes m as a ddpm model file at path, atomically.
func WriteModel(path string, m *Model) error {
	f, err := m.File()
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return WriteFileAtomic(path, f)
}

// Checkpoint is a model file plus the state needed to resume training.
type Checkpoint struct {
	// Model holds the EMA weights (under the plain names) and the configs.
	Model
	// Raw, AdamM and AdamV hold the optimised weights and Adam's moments,
	// keyed by the same plain names (the prefixes are added on write).
	Raw, AdamM, AdamV map[string]Tensor
	// TrainState is the trainer's state JSON (step, RNG state, ...), opaque
	// here; it must be a JSON object.
	TrainState json.RawMessage
}

// File encodes c as a checkpoint file.
func (c *Checkpoint) File() (*File, error) {
	f, err := c.Model.File()
	if err != nil {
		return nil, fmt.Errorf("encode checkpoint: %w", err)
	}
	s, err := checkJSON(MetaTrainState, c.TrainState, true)
	if err != nil {
		return nil, fmt.Errorf("encode checkpoint: %w", err)
	}
	f.Metadata[MetaTrainState] = s
	for _, part := range []struct {
		prefix string
		m      map[string]Tensor
	}{{PrefixRaw, c.Raw}, {PrefixAdamM, c.AdamM}, {PrefixAdamV, c.AdamV}} {
		for name, t := range part.m {
			t.DType = ""
			f.Tensors[part.prefix+name] = t
		}
	}
	return f, nil
}

// WriteCheckpoint writes c at path atomically: a crash never leaves a
// partial file, and the previous checkpoint stays loadable until the new
// one is complete.
func WriteCheckpoint(path string, c *Checkpoint) error {
	f, err := c.File()
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return WriteFileAtomic(path, f)
}

// ReadCheckpoint reads a checkpoint with its training state. Errors name
// the file; a model file without MetaTrainState is an error.
func ReadCheckpoint(path string) (*Checkpoint, error) {
	f, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := checkpointFromFile(f)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %s: %w", path, err)
	}
	return c, nil
}

func checkpointFromFile(f *File) (*Checkpoint, error) {
	m, err := modelFromFile(f)
	if err != nil {
		return nil, err
	}
	ts, ok := f.Metadata[MetaTrainState]
	if !ok {
		return nil, fmt.Errorf("metadata lacks %q: a model file, not a checkpoint", MetaTrainState)
	}
	if _, err := checkJSON("metadata "+MetaTrainState, json.RawMessage(ts), true); err != nil {
		return nil, err
	}
	c := &Checkpoint{Model: *m, TrainState: json.RawMessage(ts),
		Raw: map[string]Tensor{}, AdamM: map[string]Tensor{}, AdamV: map[string]Tensor{}}
	for name, t := range f.Tensors {
		switch {
		case strings.HasPrefix(name, PrefixRaw):
			c.Raw[strings.TrimPrefix(name, PrefixRaw)] = t
		case strings.HasPrefix(name, PrefixAdamM):
			c.AdamM[strings.TrimPrefix(name, PrefixAdamM)] = t
		case strings.HasPrefix(name, PrefixAdamV):
			c.AdamV[strings.TrimPrefix(name, PrefixAdamV)] = t
		}
	}
	return c, nil
}

// ShapeMismatch is one tensor whose shape differs from the expected one.
type ShapeMismatch struct {
	Name      string
	Got, Want []int
}

// MismatchError lists every difference between the tensors a file holds
// and those a model expects. Each list is sorted by name.
type MismatchError struct {
	Missing    []string        // expected but absent
	Unexpected []string        // present but not expected
	Misshaped  []ShapeMismatch // present with another shape
}

// Error lists all names in one message.
func (e *MismatchError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, fmt.Sprintf("%d missing: %s", len(e.Missing), strings.Join(e.Missing, ", ")))
	}
	if len(e.Unexpected) > 0 {
		parts = append(parts, fmt.Sprintf("%d unexpected: %s", len(e.Unexpected), strings.Join(e.Unexpected, ", ")))
	}
	if len(e.Misshaped) > 0 {
		s := make([]string, len(e.Misshaped))
		for i, m := range e.Misshaped {
			s[i] = fmt.Sprintf("%s has shape %v, want %v", m.Name, m.Got, m.Want)
		}
		parts = append(parts, fmt.Sprintf("%d mis-shaped: %s", len(e.Misshaped), strings.Join(s, "; ")))
	}
	return "weights do not match the model: " + strings.Join(parts, "; ")
}

// CheckTensors compares tensors with the expected name -> shape map and
// returns nil when they match exactly, or one *MismatchError listing every
// missing, unexpected and mis-shaped name.
func CheckTensors(tensors map[string]Tensor, want map[string][]int) error {
	e := &MismatchError{}
	for name, shape := range want {
		t, ok := tensors[name]
		if !ok {
			e.Missing = append(e.Missing, name)
			continue
		}
		if !slices.Equal(t.Shape, shape) {
			e.Misshaped = append(e.Misshaped, ShapeMismatch{Name: name, Got: t.Shape, Want: shape})
		}
	}
	for name := range tensors {
		if _, ok := want[name]; !ok {
			e.Unexpected = append(e.Unexpected, name)
		}
	}
	if len(e.Missing)+len(e.Unexpected)+len(e.Misshaped) == 0 {
		return nil
	}
	sort.Strings(e.Missing)
	sort.Strings(e.Unexpected)
	sort.Slice(e.Misshaped, func(i, j int) bool { return e.Misshaped[i].Name < e.Misshaped[j].Name })
	return e
}
