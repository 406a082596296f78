package diffusion

import (
	"context"
	"math"
)

// repaintLevels returns RePaint's schedule of noise levels (Lugmayr et al.
// 2022, Algorithm 1 and its "jump" schedule) over n steps: level L in
// 0..n, where level 0 is the clean image and level L+1 holds a sample of
// x at schedule index L. It walks down from level n one step at a time;
// on reaching a level that is a multiple of jump (below n - jump) it goes
// back up jump levels, nSample-1 times in all for that level.
func repaintLevels(n, jump, nSample int) []int {
	jumps := map[int]int{}
	for l := 0; l < n-jump; l += jump {
		jumps[l] = nSample - 1
	}
	levels := []int{n}
	l := n
	for l >= 1 {
		l--
		levels = append(levels, l)
		if jumps[l] > 0 {
			jumps[l]--
			for range jump {
				l++
				levels = append(levels, l)
			}
		}
	}
	return levels
}

// repaint runs RePaint inpainting: each reverse step from level L+1 to L
// combines the model's sample for the unknown pixels with the known image
// noised to level L by q(x_L | x_0) (Lugmayr et al. 2022, Eq. 8-9):
//
//	x_L = m * x_L^known + (1 - m) * x_L^unknown
//
// and each jump back up from level L to L+1 draws
// q(x_{L+1} | x_L) = N(sqrt(1 - beta_L) x_L, beta_L I) (Ho Eq. 2). At
// level 0 the known pixels are the image itself, bit for bit where m = 1.
func (r *run) repaint(ctx context.Context) (Batch, error) {
	o := r.o
	img := *o.Image
	n := r.d.T()
	jump, ns := max(o.JumpLength, 1), max(o.JumpNSample, 1)
	levels := repaintLevels(n, jump, ns)
	for k := 1; k < len(levels); k++ {
		if levels[k] < levels[k-1] {
			r.total++
		}
	}
	x := r.startNoise()
	for k := 1; k < len(levels); k++ {
		from, to := levels[k-1], levels[k]
		if to > from {
			// Jump back: x_{to} ~ q(x_to | x_from) with beta at index from.
			beta := r.d.s.Betas[from]
			z := r.noiseFor(x, true)
			a, b := math.Sqrt(1-beta), math.Sqrt(beta)
			for j := range x.Data {
				x.Data[j] = float32(a*float64(x.Data[j]) + b*float64(z.Data[j]))
			}
			continue
		}
		i := from - 1 // schedule index of x at level from
		out, err := r.predict(ctx, x, i)
		if err != nil {
			return Batch{}, err
		}
		sg, err := r.classifierGrad(ctx, x, float64(r.d.s.Timesteps[i]))
		if err != nil {
			return Batch{}, err
		}
		unknown, _, err := r.d.ddpmStep(out, x, i, r.noiseFor(x, i > 0), r.clip, sg)
		if err != nil {
			return Batch{}, err
		}
		known := img
		if to > 0 {
			known = r.qSample(img, to-1, r.noiseFor(img, true))
		}
		x = unknown
		r.blendKnown(x, known)
	}
	return x, nil
}
