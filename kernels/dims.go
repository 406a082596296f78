package kernels

import "fmt"

// ConvDims describes a 2-D convolution: input (N, C, H, W), weight
// (K, C, R, S), output (N, K, OutH(), OutW()). Padding may differ per side,
// as diffusers' Downsample2D with padding 0 pads only bottom and right.
type ConvDims struct {
	N, C, H, W                           int // input batch, channels, height, width
	K, R, S                              int // output channels, kernel height, kernel width
	StrideH, StrideW                     int // strides (>= 1)
	PadTop, PadLeft, PadBottom, PadRight int // zero padding on each side
}

// OutH is the output height: (H + PadTop + PadBottom - R) / StrideH + 1.
func (d ConvDims) OutH() int { return (d.H+d.PadTop+d.PadBottom-d.R)/d.StrideH + 1 }

// OutW is the output width: (W + PadLeft + PadRight - S) / StrideW + 1.
func (d ConvDims) OutW() int { return (d.W+d.PadLeft+d.PadRight-d.S)/d.StrideW + 1 }

// Validate reports dimensions no convolution can have.
func (d ConvDims) Validate() error {
	if d.N < 1 || d.C < 1 || d.H < 1 || d.W < 1 || d.K < 1 || d.R < 1 || d.S < 1 {
		return fmt.Errorf("kernels: conv dims %+v: sizes must be >= 1", d)
	}
	if d.StrideH < 1 || d.StrideW < 1 {
		return fmt.Errorf("kernels: conv dims %+v: strides must be >= 1", d)
	}
	if d.PadTop < 0 || d.PadLeft < 0 || d.PadBottom < 0 || d.PadRight < 0 {
		return fmt.Errorf("kernels: conv dims %+v: padding must be >= 0", d)
	}
	if d.OutH() < 1 || d.OutW() < 1 {
		return fmt.Errorf("kernels: conv dims %+v: kernel larger than padded input", d)
	}
	return nil
}

// GroupNormDims describes a group normalisation over x (N, C, HW) with
// Groups groups of C/Groups channels each, optionally followed by SiLU.
type GroupNormDims struct {
	N, C, HW, Groups int
	Eps              float32
	SiLU             bool // apply y = z * sigmoid(z) after the affine step
}

// AttnDims describes self-attention over T tokens with Heads heads of
// HeadDim channels; Scale multiplies q k^T (usually 1/sqrt(HeadDim)).
type AttnDims struct {
	B, T, Heads, HeadDim int
	Scale                float32
}
