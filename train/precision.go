package train

import (
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/kernels"
)

// LossScale configures dynamic loss scaling (Micikevicius et al. 2018,
// "Mixed Precision Training"), which fp16 training needs: gradients below
// half's smallest normal (6.1e-5) lose their precision, and below 6e-8
// they flush to zero, when a GEMM's inputs are rounded to half. The
// gradient of the loss is multiplied by a scale S (a power of two, so the
// scaling itself is exact in float32), the parameter gradients are divided
// by S before clipping and the optimiser, and a step whose gradients
// overflowed (inf or NaN anywhere) is skipped: no optimiser or EMA
// update, S halves; after GrowthInterval good steps in a row S doubles.
// The loss that is logged is the unscaled one. The weights, optimiser
// state and gradients stay float32 (the "master weights").
type LossScale struct {
	Enabled        bool    `json:"enabled,omitempty"`
	Init           float64 `json:"init,omitempty"`            // the first S, a power of two (0: 65536)
	GrowthInterval int     `json:"growth_interval,omitempty"` // good steps before S doubles (0: 2000)
}

// The defaults are PyTorch's torch.cuda.amp.GradScaler's.
const (
	defaultLossScale      = 65536
	defaultGrowthInterval = 2000
	// The scale stays within [2^-24, 2^64]: beyond, it is stuck anyway.
	minLossScale = 0x1p-24
	maxLossScale = 0x1p64
)

func (l LossScale) validate() error {
	if l.Init != 0 {
		_, e := math.Frexp(l.Init)
		if !(l.Init > 0) || math.IsInf(l.Init, 0) || math.Ldexp(1, e-1) != l.Init {
			return fmt.Errorf("train: option loss_scale.init = %v: must be a power of two > 0 (0: 65536)", l.Init)
		}
	}
	if l.GrowthInterval < 0 {
		return fmt.Errorf("train: option loss_scale.growth_interval = %d: must be >= 0 (0: 2000)", l.GrowthInterval)
	}
	return nil
}

// lossScaler is the dynamic state, kept in checkpoints.
type lossScaler struct {
	Scale   float64 `json:"scale"`   // S for the next step
	Good    int     `json:"good"`    // good steps since S last changed
	Skipped int     `json:"skipped"` // steps skipped so far
	used    float64 // S of the last step (the logged loss is divided by it)
	skipped bool    // the last step was skipped
}

// scaler returns the state, initialised on first use.
func (tr *Trainer[B]) scaler() *lossScaler {
	s := &tr.scale
	if s.Scale == 0 {
		s.Scale = tr.Options.LossScale.Init
		if s.Scale == 0 {
			s.Scale = defaultLossScale
		}
	}
	return s
}

// scaleCoef multiplies the example weights of the loss coefficient rows
// by S, so dloss/dout (and every gradient behind it) comes out scaled;
// the per-example terms the importance sampler reads are not weighted.
func (tr *Trainer[B]) scaleCoef(rows []float32) []float32 {
	if !tr.Options.LossScale.Enabled {
		return rows
	}
	s := tr.scaler()
	s.used = s.Scale
	for i := kernels.CoefWeight; i < len(rows); i += kernels.NumLossCoef {
		rows[i] *= float32(s.Scale)
	}
	return rows
}

// unscaleGrads divides the gradients by S and checks them (one gradient
// norm, read back to the host: the decision to step is taken there, as
// PyTorch's GradScaler does). skip reports an overflow: the caller then
// leaves the parameters, the optimiser state and the EMA as they are.
func (tr *Trainer[B]) unscaleGrads(grads B, n int) (skip bool, err error) {
	if !tr.Options.LossScale.Enabled {
		return false, nil
	}
	s := tr.scaler()
	tr.ops.Axpby(grads, float32(1/s.used), grads, 0, n)
	tr.ops.Norm(tr.norm, grads, n)
	norm := make([]float32, 1)
	tr.ops.Download(norm, tr.norm)
	if err := tr.ops.Sync(); err != nil {
		return false, fmt.Errorf("train: loss scaling: %w", err)
	}
	g := float64(norm[0])
	s.skipped = math.IsNaN(g) || math.IsInf(g, 0)
	if s.skipped {
		s.Scale = math.Max(s.Scale/2, minLossScale)
		s.Good = 0
		s.Skipped++
		tr.ops.Fill(tr.norm, 0, 1) // the log shows grad_norm 0 for a skipped step
		return true, nil
	}
	s.Good++
	interval := tr.Options.LossScale.GrowthInterval
	if interval == 0 {
		interval = defaultGrowthInterval
	}
	if s.Good >= interval {
		s.Scale = math.Min(s.Scale*2, maxLossScale)
		s.Good = 0
	}
	return false, nil
}

// lossFactor converts the batch loss the device computed (scaled by the
// last step's S) to the true loss.
func (tr *Trainer[B]) lossFactor() float64 {
	if !tr.Options.LossScale.Enabled || tr.scale.used == 0 {
		return 1
	}
	return 1 / tr.scale.used
}

// stepSkipped reports whether the loss scaler skipped the last step (its
// non-finite values then do not stop training).
func (tr *Trainer[B]) stepSkipped() bool {
	return tr.Options.LossScale.Enabled && tr.scale.skipped
}

// logScale adds the scaler's state to a log record.
func (tr *Trainer[B]) logScale(rec map[string]any) {
	if tr.Options.LossScale.Enabled {
		rec["loss_scale"], rec["skipped_steps"] = tr.scale.used, tr.scale.Skipped
	}
}

// scalerState is the scaler's part of a checkpoint (nil when disabled).
func (tr *Trainer[B]) scalerState() *lossScaler {
	if !tr.Options.LossScale.Enabled {
		return nil
	}
	s := *tr.scaler()
	return &s
}

// restoreScaler resumes the scaler from a checkpoint's state.
func (tr *Trainer[B]) restoreScaler(s *lossScaler) {
	if s != nil && tr.Options.LossScale.Enabled {
		tr.scale = lossScaler{Scale: s.Scale, Good: s.Good, Skipped: s.Skipped}
	}
}

// LossScaleNow is the loss scale S the next step will use (0 when loss
// scaling is off) and the number of steps it skipped so far.
func (tr *Trainer[B]) LossScaleNow() (scale float64, skipped int) {
	if !tr.Options.LossScale.Enabled {
		return 0, 0
	}
	s := tr.scaler()
	return s.Scale, s.Skipped
}
