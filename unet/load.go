package unet

import (
	"fmt"
	"strings"

	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/weights"
)

// Load opens a diffusers folder, a diffusers pipeline root, a ddpm model
// file or a ddpm checkpoint (see weights.Open) and builds the model on cpu.
// The returned source carries the diffusion/scheduler config and class
// names that came with the weights.
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

// FromSource builds the model described by src's UNet config and loads its
// tensors. Missing, unexpected and mis-shaped tensors are one error that
// lists every name. Attention weights under the names older diffusers
// versions used (query, key, value, proj_attn) are renamed.
func FromSource(src *weights.Source, cpu *kernels.CPU) (*Model, error) {
	if len(src.UNetConfig) == 0 {
		return nil, fmt.Errorf("unet: %s has no UNet config", src.Path)
	}
	cfg, err := ParseConfig(src.UNetConfig)
	if err != nil {
		return nil, err
	}
	m, err := New(cfg, cpu, 0)
	if err != nil {
		return nil, err
	}
	tensors := renameLegacy(src.Tensors)
	if err := weights.CheckTensors(tensors, m.Shapes()); err != nil {
		return nil, err
	}
	for _, p := range m.params {
		copy(p.t.Data().([]float32), tensors[p.name].Data)
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
func (m *Model) Tensors() map[string]weights.Tensor {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]weights.Tensor, len(m.params))
	for _, p := range m.params {
		out[p.name] = weights.Tensor{Shape: []int(p.shape.Clone()), Data: append([]float32(nil), p.t.Data().([]float32)...)}
	}
	return out
}

// SetTensors copies weights (for example EMA weights) into the model; the
// names and shapes must match exactly.
func (m *Model) SetTensors(t map[string]weights.Tensor) error {
	if err := weights.CheckTensors(t, m.Shapes()); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.params {
		copy(p.t.Data().([]float32), t[p.name].Data)
	}
	return nil
}

// Export returns the model as a weights.Model: its config JSON and a copy
// of every tensor. The diffusion config, scheduler config and class names
// are taken from meta when it is not nil (for example the Source the model
// was loaded from), so they travel with the weights.
func (m *Model) Export(meta *weights.Model) *weights.Model {
	out := &weights.Model{UNetConfig: m.cfg.JSON(), Tensors: m.Tensors()}
	if meta != nil {
		out.DiffusionConfig = meta.DiffusionConfig
		out.SchedulerConfig = meta.SchedulerConfig
		out.ClassNames = append([]string(nil), meta.ClassNames...)
	}
	return out
}

// Save writes the model as a ddpm model file (safetensors with the UNet
// config in its metadata; see weights.WriteModel); meta as in Export.
func (m *Model) Save(path string, meta *weights.Model) error {
	if err := weights.WriteModel(path, m.Export(meta)); err != nil {
		return fmt.Errorf("unet: save %s: %w", path, err)
	}
	return nil
}
