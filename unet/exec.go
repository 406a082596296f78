package unet

import (
	"fmt"

	"github.com/ddpm-go/ddpm/gexec"
)

// The ops implement gexec.Op, so package gexec can run a model's graph on
// any kernels.Ops backend (the GPU included). Each Exec issues the same
// kernels.Ops call as the op's Do on the CPU. ExternalLoss and its
// gradient call back into Go and run through gexec's HostFallback.

var (
	_ gexec.Op = (*Conv2D)(nil)
	_ gexec.Op = (*Conv2DBackwardData)(nil)
	_ gexec.Op = (*Conv2DBackwardFilter)(nil)
	_ gexec.Op = (*Linear)(nil)
	_ gexec.Op = (*LinearBackward)(nil)
	_ gexec.Op = (*GroupNorm)(nil)
	_ gexec.Op = (*GroupNormBackward)(nil)
	_ gexec.Op = (*SiLU)(nil)
	_ gexec.Op = (*SiLUBackward)(nil)
	_ gexec.Op = (*Add)(nil)
	_ gexec.Op = (*AddChannelBias)(nil)
	_ gexec.Op = (*ChannelSum)(nil)
	_ gexec.Op = (*Upsample2x)(nil)
	_ gexec.Op = (*Upsample2xBackward)(nil)
	_ gexec.Op = (*Concat)(nil)
	_ gexec.Op = (*Split)(nil)
	_ gexec.Op = (*Transpose)(nil)
	_ gexec.Op = (*Attention)(nil)
	_ gexec.Op = (*AttentionBackward)(nil)
	_ gexec.Op = (*Part)(nil)
	_ gexec.Op = (*Embed)(nil)
	_ gexec.Op = (*EmbedBackward)(nil)
	_ gexec.Op = (*Dropout)(nil)
)

// Exec runs Conv2D: in = (x, w, b).
func (o *Conv2D) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.Conv2D(out, in[0], in[1], in[2], o.Dims)
	return nil
}

// Exec runs Conv2DBackwardData: in = (dy, w).
func (o *Conv2DBackwardData) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.Conv2DBackwardData(out, in[0], in[1], o.Dims)
	return nil
}

// Exec runs Conv2DBackwardFilter: in = (dy, x), out = [dw | db].
func (o *Conv2DBackwardFilter) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	d := o.Dims
	wn := d.K * d.C * d.R * d.S
	k.Conv2DBackwardFilter(k.Slice(out, 0, wn), k.Slice(out, wn, d.K), in[0], in[1], d)
	return nil
}

// Exec runs Linear: in = (x, w, b).
func (o *Linear) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.Linear(out, in[0], in[1], in[2], o.M, o.In, o.Out)
	return nil
}

// Exec runs LinearBackward: in = (dy, x, w), out = [dx | dw | db].
func (o *LinearBackward) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	nx, nw := o.M*o.In, o.Out*o.In
	k.LinearBackward(k.Slice(out, 0, nx), k.Slice(out, nx, nw), k.Slice(out, nx+nw, o.Out), in[0], in[1], in[2], o.M, o.In, o.Out)
	return nil
}

// Exec runs GroupNorm: in = (x, gamma, beta); the statistics are saved
// for GroupNormBackward under "mean" and "rstd".
func (o *GroupNorm) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	ng := o.Dims.N * o.Dims.Groups
	k.GroupNorm(out, k.Saved("mean", ng), k.Saved("rstd", ng), in[0], in[1], in[2], o.Dims)
	return nil
}

// Exec runs GroupNormBackward: in = (x, gamma, beta, dy), out = [dx |
// dgamma | dbeta], with the statistics its forward node saved.
func (o *GroupNormBackward) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	d := o.Dims
	mean, rstd := k.SavedOf(o.FwdNode.ID(), "mean"), k.SavedOf(o.FwdNode.ID(), "rstd")
	if mean == gexec.NoBuf || rstd == gexec.NoBuf {
		return fmt.Errorf("unet: %s: the forward GroupNorm %s has not run in this program", o.name, o.FwdNode.Name())
	}
	total := d.N * d.C * d.HW
	k.GroupNormBackward(k.Slice(out, 0, total), k.Slice(out, total, d.C), k.Slice(out, total+d.C, d.C),
		in[3], in[0], mean, rstd, in[1], in[2], d)
	return nil
}

// Exec runs SiLU: in = (x).
func (o *SiLU) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.SiLU(out, in[0], o.out.TotalSize())
	return nil
}

// Exec runs SiLUBackward: in = (dy, x).
func (o *SiLUBackward) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.SiLUBackward(out, in[0], in[1], o.out.TotalSize())
	return nil
}

// Exec runs Add: in = (a, b).
func (o *Add) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.Add(out, in[0], in[1], o.out.TotalSize())
	return nil
}

// Exec runs AddChannelBias: in = (x, bias).
func (o *AddChannelBias) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.AddChannelBias(out, in[0], in[1], o.N, o.C, o.P)
	return nil
}

// Exec runs ChannelSum: in = (dy).
func (o *ChannelSum) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.ChannelSum(out, in[0], o.N, o.C, o.P)
	return nil
}

// Exec runs Upsample2x: in = (x).
func (o *Upsample2x) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.Upsample2x(out, in[0], o.N, o.C, o.H, o.W)
	return nil
}

// Exec runs Upsample2xBackward: in = (dy).
func (o *Upsample2xBackward) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.Upsample2xBackward(out, in[0], o.N, o.C, o.H, o.W)
	return nil
}

// Exec runs Concat: in = (a, b).
func (o *Concat) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.ConcatChannels(out, in[0], in[1], o.N, o.Ca, o.Cb, o.P)
	return nil
}

// Exec runs Split: in = (dy).
func (o *Split) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	if o.Which == 0 {
		k.SplitChannels(out, gexec.NoBuf, in[0], o.N, o.Ca, o.Cb, o.P)
	} else {
		k.SplitChannels(gexec.NoBuf, out, in[0], o.N, o.Ca, o.Cb, o.P)
	}
	return nil
}

// Exec runs Transpose: in = (x).
func (o *Transpose) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.Transpose12(out, in[0], o.N, o.I, o.J)
	return nil
}

// Exec runs Attention: in = (q, k, v).
func (o *Attention) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.Attention(out, in[0], in[1], in[2], o.Dims)
	return nil
}

// Exec runs AttentionBackward: in = (q, k, v, do), out = [dq | dk | dv].
func (o *AttentionBackward) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	n := o.out.TotalSize() / 3
	k.AttentionBackward(k.Slice(out, 0, n), k.Slice(out, n, n), k.Slice(out, 2*n, n), in[3], in[0], in[1], in[2], o.Dims)
	return nil
}

// Exec runs Part: in = (packed).
func (o *Part) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	n := o.out.TotalSize()
	k.Copy(out, k.Slice(in[0], o.Off, n), n)
	return nil
}

// Exec runs Embed: in = (onehot, table).
func (o *Embed) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.LinearBackward(out, gexec.NoBuf, gexec.NoBuf, in[0], gexec.NoBuf, in[1], o.N, o.D, o.V)
	return nil
}

// Exec runs EmbedBackward: in = (onehot, dy).
func (o *EmbedBackward) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.LinearBackward(gexec.NoBuf, out, gexec.NoBuf, in[0], in[1], gexec.NoBuf, o.N, o.D, o.V)
	return nil
}

// Exec runs Dropout: in = (x, mask).
func (o *Dropout) Exec(k gexec.Kernels, out gexec.Buf, in []gexec.Buf) error {
	k.Mul(out, in[0], in[1], o.out.TotalSize())
	return nil
}
