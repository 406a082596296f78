// Package mnistclf is a small convolutional MNIST classifier written in plain
// Go, used to score generated digits: `ddpm sample --class K` should produce
// images this classifier reads as K.
//
// The network is LeNet-like (LeCun et al. 1998):
//
//	input (1, 28, 28) in [-1, 1]
//	conv 5×5, 1→8, valid, ReLU      (8, 24, 24)
//	max-pool 2×2                    (8, 12, 12)
//	conv 5×5, 8→16, valid, ReLU     (16, 8, 8)
//	max-pool 2×2                    (16, 4, 4) = 256
//	linear 256→64, ReLU
//	linear 64→10                    logits
//
// trained with softmax cross-entropy and Adam (Kingma & Ba 2015). Inputs are
// the diffusion convention x = u/127.5 − 1; 32×32 inputs (MNIST padded by 2
// px, the size the UNet samples) are center-cropped to 28×28. Pretrained
// returns the weights committed in clf.bin (see README.md).
package mnistclf

import "math"

// Layer sizes.
const (
	inH    = 28
	kSize  = 5
	c1     = 8
	h1     = inH - kSize + 1 // 24
	p1     = h1 / 2          // 12
	c2     = 16
	h2     = p1 - kSize + 1 // 8
	p2     = h2 / 2         // 4
	flat   = c2 * p2 * p2   // 256
	hidden = 64
	// NumClasses is the number of digit classes.
	NumClasses = 10
)

// Parameter offsets in one flat vector, in the order they are saved.
const (
	offW1  = 0
	offB1  = offW1 + c1*1*kSize*kSize  // conv1.w (8, 1, 5, 5)
	offW2  = offB1 + c1                // conv1.b (8)
	offB2  = offW2 + c2*c1*kSize*kSize // conv2.w (16, 8, 5, 5)
	offF1  = offB2 + c2                // conv2.b (16)
	offFB1 = offF1 + hidden*flat       // fc1.w (64, 256)
	offF2  = offFB1 + hidden           // fc1.b (64)
	offFB2 = offF2 + NumClasses*hidden // fc2.w (10, 64)
	nParam = offFB2 + NumClasses       // fc2.b (10)
)

// tensorSizes lists the sizes of the parameter tensors in storage order.
var tensorSizes = [...]int{offB1 - offW1, offW2 - offB1, offB2 - offW2, offF1 - offB2, offFB1 - offF1, offF2 - offFB1, offFB2 - offF2, nParam - offFB2}

// work holds the activations of one example, reused across examples.
type work struct {
	in     [inH * inH]float32
	a1     [c1 * h1 * h1]float32 // conv1 output after ReLU
	m1     [c1 * p1 * p1]float32 // pool1 output
	i1     [c1 * p1 * p1]int32   // argmax index into a1
	a2     [c2 * h2 * h2]float32 // conv2 output after ReLU
	m2     [flat]float32         // pool2 output
	i2     [flat]int32           // argmax index into a2
	h      [hidden]float32       // fc1 output after ReLU
	logits [NumClasses]float32

	// gradients of the activations
	dm2 [flat]float32
	da2 [c2 * h2 * h2]float32
	dm1 [c1 * p1 * p1]float32
	da1 [c1 * h1 * h1]float32
	dh  [hidden]float32
	dl  [NumClasses]float32
}

// convValid computes out[o,y,x] = b[o] + Σ_{c,ky,kx} w[o,c,ky,kx]·in[c,y+ky,x+kx]
// for a 5×5 kernel with no padding: in (cin, hin, hin), out (cout, hin−4, hin−4).
func convValid(out, in, w, b []float32, cin, cout, hin int) {
	ho := hin - kSize + 1
	for o := range cout {
		plane := out[o*ho*ho : (o+1)*ho*ho]
		for i := range plane {
			plane[i] = b[o]
		}
		for c := range cin {
			src := in[c*hin*hin : (c+1)*hin*hin]
			for ky := range kSize {
				for kx := range kSize {
					wv := w[((o*cin+c)*kSize+ky)*kSize+kx]
					for y := range ho {
						s := src[(y+ky)*hin+kx : (y+ky)*hin+kx+ho]
						d := plane[y*ho : y*ho+ho]
						for x := range d {
							d[x] += wv * s[x]
						}
					}
				}
			}
		}
	}
}

// convValidBack accumulates the gradients of convValid given dout (cout, ho, ho):
// dw[o,c,ky,kx] += Σ_{y,x} dout[o,y,x]·in[c,y+ky,x+kx], db[o] += Σ dout[o],
// and, when din is non-nil, din[c,y+ky,x+kx] += w[o,c,ky,kx]·dout[o,y,x]
// (din must be zeroed by the caller).
func convValidBack(dw, db, din, dout, in, w []float32, cin, cout, hin int) {
	ho := hin - kSize + 1
	for o := range cout {
		g := dout[o*ho*ho : (o+1)*ho*ho]
		var sb float32
		for _, v := range g {
			sb += v
		}
		db[o] += sb
		for c := range cin {
			src := in[c*hin*hin : (c+1)*hin*hin]
			for ky := range kSize {
				for kx := range kSize {
					wi := ((o*cin+c)*kSize+ky)*kSize + kx
					wv := w[wi]
					var acc float32
					for y := range ho {
						off := (y+ky)*hin + kx
						s := src[off : off+ho]
						gr := g[y*ho : y*ho+ho]
						for x, gv := range gr {
							acc += gv * s[x]
						}
						if din != nil {
							d := din[c*hin*hin+off : c*hin*hin+off+ho]
							for x, gv := range gr {
								d[x] += wv * gv
							}
						}
					}
					dw[wi] += acc
				}
			}
		}
	}
}

// relu applies max(0, x) in place.
func relu(x []float32) {
	for i, v := range x {
		if v < 0 {
			x[i] = 0
		}
	}
}

// maxPool2 takes the maximum of each 2×2 block of in (c, h, h) into out
// (c, h/2, h/2), recording the index of the winner in idx.
func maxPool2(out []float32, idx []int32, in []float32, c, h int) {
	ho := h / 2
	for ch := range c {
		for y := range ho {
			for x := range ho {
				i0 := int32(ch*h*h + 2*y*h + 2*x)
				best := i0
				for _, j := range [3]int32{i0 + 1, i0 + int32(h), i0 + int32(h) + 1} {
					if in[j] > in[best] {
						best = j
					}
				}
				o := (ch*ho+y)*ho + x
				out[o], idx[o] = in[best], best
			}
		}
	}
}

// linear computes out[o] = b[o] + Σ_i w[o,i]·in[i] for w (len(out), len(in)).
func linear(out, in, w, b []float32) {
	n := len(in)
	for o := range out {
		row := w[o*n : (o+1)*n]
		s := b[o]
		for i, v := range in {
			s += row[i] * v
		}
		out[o] = s
	}
}

// linearBack accumulates dw[o,i] += dout[o]·in[i], db[o] += dout[o] and,
// when din is non-nil, sets din[i] = Σ_o w[o,i]·dout[o].
func linearBack(dw, db, din, dout, in, w []float32) {
	n := len(in)
	if din != nil {
		clear(din)
	}
	for o, g := range dout {
		db[o] += g
		row := w[o*n : (o+1)*n]
		drow := dw[o*n : (o+1)*n]
		for i, v := range in {
			drow[i] += g * v
		}
		if din != nil {
			for i := range din {
				din[i] += g * row[i]
			}
		}
	}
}

// forward runs the network on s.in with parameters p, filling s.logits.
func forward(p []float32, s *work) {
	convValid(s.a1[:], s.in[:], p[offW1:offB1], p[offB1:offW2], 1, c1, inH)
	relu(s.a1[:])
	maxPool2(s.m1[:], s.i1[:], s.a1[:], c1, h1)
	convValid(s.a2[:], s.m1[:], p[offW2:offB2], p[offB2:offF1], c1, c2, p1)
	relu(s.a2[:])
	maxPool2(s.m2[:], s.i2[:], s.a2[:], c2, h2)
	linear(s.h[:], s.m2[:], p[offF1:offFB1], p[offFB1:offF2])
	relu(s.h[:])
	linear(s.logits[:], s.h[:], p[offF2:offFB2], p[offFB2:nParam])
}

// lossAndGrad computes the softmax cross-entropy −log softmax(logits)[label]
// after forward and writes dL/dlogits = softmax(logits) − onehot(label)
// into s.dl.
func lossAndGrad(s *work, label int) float64 {
	mx := s.logits[0]
	for _, v := range s.logits {
		mx = max(mx, v)
	}
	var z float64
	for _, v := range s.logits {
		z += math.Exp(float64(v - mx))
	}
	for k, v := range s.logits {
		s.dl[k] = float32(math.Exp(float64(v-mx)) / z)
	}
	s.dl[label]--
	return math.Log(z) - float64(s.logits[label]-mx)
}

// backward accumulates dL/dparams into g given s.dl, after forward.
func backward(p, g []float32, s *work) {
	linearBack(g[offF2:offFB2], g[offFB2:nParam], s.dh[:], s.dl[:], s.h[:], p[offF2:offFB2])
	for i, v := range s.h {
		if v <= 0 {
			s.dh[i] = 0
		}
	}
	linearBack(g[offF1:offFB1], g[offFB1:offF2], s.dm2[:], s.dh[:], s.m2[:], p[offF1:offFB1])
	clear(s.da2[:])
	for o, j := range s.i2 {
		if s.a2[j] > 0 {
			s.da2[j] = s.dm2[o]
		}
	}
	clear(s.dm1[:])
	convValidBack(g[offW2:offB2], g[offB2:offF1], s.dm1[:], s.da2[:], s.m1[:], p[offW2:offB2], c1, c2, p1)
	clear(s.da1[:])
	for o, j := range s.i1 {
		if s.a1[j] > 0 {
			s.da1[j] = s.dm1[o]
		}
	}
	convValidBack(g[offW1:offB1], g[offB1:offW2], nil, s.da1[:], s.in[:], p[offW1:offB1], 1, c1, inH)
}
