package unet

import (
	"fmt"
	"strings"

	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/weights"
)

// Load opens any model source weights.Open accepts (a diffusers folder or
// pipeline root, a ddpm model file or checkpoint, a Hugging Face Hub id,
// weights.DefaultPath) and builds the model on cpu. The returned source
// carries the diffusion/scheduler config and class names that came with
// the weights.
func Load(path string, cpu *kernels.CPU) (*Model, *weights.Source, error) {
	src, err := weights.Open(path)
	if err != nil {
		return nil, nil, err
	}
	m, err := FromSource(src, cpu)
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", path, err)
	}
	return m, src, nil
}

// FromSource builds the model described by src's UNet config on cpu and
// loads its tensors (see FromSourceOn).
func FromSource(src *weights.Source, cpu *kernels.CPU) (*Model, error) {
	if cpu == nil {
		return nil, fmt.Errorf("unet: FromSource: nil kernels.CPU")
	}
	return FromSourceOn[[]float32](src, cpu)
}

// FromSourceOn builds the model described by src's UNet config on ops and
// uploads its tensors. Missing, unexpected and mis-shaped tensors are one
// error that lists every name. Attention weights under the names older
// diffusers versions used (query, key, value, proj_attn) are renamed.
func FromSourceOn[B any](src *weights.Source, ops kernels.Ops[B]) (*Net[B], error) {
	if len(src.UNetConfig) == 0 {
		return nil, fmt.Errorf("unet: %s has no UNet config", src.Path)
	}
	cfg, err := ParseConfig(src.UNetConfig)
	if err != nil {
		return nil, err
	}
	tensors := renameLegacy(src.Tensors)
	if err := cfg.checkWeights(tensors); err != nil {
		return nil, fmt.Errorf("unet: %w", err)
	}
	m, err := newEmptyOn[B](cfg, ops)
	if err != nil {
		return nil, err
	}
	if err := m.SetTensors(tensors); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// renameLegacy maps the attention names of diffusers < 0.14 to today's.
func renameLegacy(in map[string]weights.Tensor) map[string]weights.Tensor {
	repl := strings.NewReplacer(".query.", ".to_q.", ".key.", ".to_k.", ".value.", ".to_v.", ".proj_attn.", ".to_out.0.")
	out := make(map[string]weights.Tensor, len(in))
	for k, v := range in {
		out[repl.Replace(k)] = v
	}
	return out
}

// Tensors returns a copy of the weights under their diffusers names.
func (m *Net[B]) Tensors() (map[string]weights.Tensor, error) { return m.nn.Tensors() }

// SetTensors copies weights (for example EMA weights) into the model; the
// names and shapes must match exactly.
func (m *Net[B]) SetTensors(t map[string]weights.Tensor) error { return m.nn.SetTensors(t) }

// Export returns the model as a weights.Model: its config JSON and a copy
// of every tensor. The diffusion config, scheduler config and class names
// are taken from meta when it is not nil (for example the Source the model
// was loaded from), so they travel with the weights.
func (m *Net[B]) Export(meta *weights.Model) (*weights.Model, error) {
	ts, err := m.Tensors()
	if err != nil {
		return nil, err
	}
	out := &weights.Model{UNetConfig: m.cfg.JSON(), Tensors: ts}
	if meta != nil {
		out.DiffusionConfig = meta.DiffusionConfig
		out.SchedulerConfig = meta.SchedulerConfig
		out.ClassNames = append([]string(nil), meta.ClassNames...)
	}
	return out, nil
}

// Save writes the model as a ddpm model file (safetensors with the UNet
// config in its metadata; see weights.WriteModel); meta as in Export.
func (m *Net[B]) Save(path string, meta *weights.Model) error {
	wm, err := m.Export(meta)
	if err == nil {
		err = weights.WriteModel(path, wm)
	}
	if err != nil {
		return fmt.Errorf("unet: save %s: %w", path, err)
	}
	return nil
}
