package unet

import (
	"context"
	"fmt"
	"sync"

	G "gorgonia.org/gorgonia"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/gexec"
	"github.com/ddpm-go/ddpm/kernels"
)

// DeviceModel runs a Model's inference graph on another backend (a GPU's
// kernels.Ops) through package gexec: the parameters are uploaded once,
// each call uploads x_t, the timestep embedding and the labels, runs the
// compiled program and downloads the output. It implements
// diffusion.Model and is safe for concurrent use (calls are serialised).
// The weights must not change while it is in use.
type DeviceModel[B any] struct {
	m      *Model
	ops    kernels.Ops[B]
	mu     sync.Mutex
	params []B
	progs  map[[3]int]*deviceProgram[B]
}

type deviceProgram[B any] struct {
	g *Graph
	p *gexec.Program[B]
}

// NewDeviceModel uploads m's parameters to ops.
func NewDeviceModel[B any](m *Model, ops kernels.Ops[B]) (*DeviceModel[B], error) {
	d := &DeviceModel[B]{m: m, ops: ops, progs: map[[3]int]*deviceProgram[B]{}}
	for _, p := range m.Params() {
		b := ops.Alloc(len(p.Value))
		ops.Upload(b, p.Value)
		d.params = append(d.params, b)
	}
	if err := ops.Sync(); err != nil {
		d.Close()
		return nil, fmt.Errorf("unet: upload parameters to %s: %w", ops.Name(), err)
	}
	return d, nil
}

// Config returns the model's configuration.
func (d *DeviceModel[B]) Config() Config { return d.m.Config() }

// program returns the compiled inference program for (n, h, w).
func (d *DeviceModel[B]) program(n, h, w int) (*deviceProgram[B], error) {
	key := [3]int{n, h, w}
	if p, ok := d.progs[key]; ok {
		return p, nil
	}
	g, err := d.m.Graph(n, h, w, false)
	if err != nil {
		return nil, err
	}
	p, err := gexec.Compile[B](d.ops, []*G.Node{g.Out}, gexec.Options{})
	if err != nil {
		return nil, fmt.Errorf("unet: compile for %s: %w", d.ops.Name(), err)
	}
	for i, n := range g.Params {
		if err := p.Bind(n, d.params[i]); err != nil {
			p.Close()
			return nil, err
		}
	}
	dp := &deviceProgram[B]{g, p}
	d.progs[key] = dp
	return dp, nil
}

// Predict is Model.Predict on the device.
func (d *DeviceModel[B]) Predict(ctx context.Context, x diffusion.Batch, t []int, y []int) (diffusion.Batch, error) {
	if err := ctx.Err(); err != nil {
		return diffusion.Batch{}, err
	}
	in, err := d.m.EncodeInputs(x, t, y)
	if err != nil {
		return diffusion.Batch{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	dp, err := d.program(x.N, x.H, x.W)
	if err != nil {
		return diffusion.Batch{}, err
	}
	if err := dp.p.SetInput(dp.g.X, in.X); err != nil {
		return diffusion.Batch{}, err
	}
	if err := dp.p.SetInput(dp.g.TEmb, in.TEmb); err != nil {
		return diffusion.Batch{}, err
	}
	if dp.g.ClassOneHot != nil {
		if err := dp.p.SetInput(dp.g.ClassOneHot, in.ClassOneHot); err != nil {
			return diffusion.Batch{}, err
		}
	}
	if err := dp.p.Run(ctx); err != nil {
		return diffusion.Batch{}, fmt.Errorf("unet: forward on %s: %w", d.ops.Name(), err)
	}
	out := diffusion.NewBatch(x.N, d.m.cfg.OutChannels, x.H, x.W)
	if err := dp.p.Read(dp.g.Out, out.Data); err != nil {
		return diffusion.Batch{}, err
	}
	return out, nil
}

// Close frees the device memory.
func (d *DeviceModel[B]) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.progs {
		p.p.Close()
	}
	d.progs = nil
	for _, b := range d.params {
		d.ops.Free(b)
	}
	d.params = nil
}
