package kernels

// Ops is the backend interface: every numeric operation the UNet, its
// gradients, the optimiser and the sampler update need, with the same names
// and argument order on every device (outputs first, then inputs, then dims),
// in the manner of gonum's blas64.Use. B is the buffer type: []float32 on the
// CPU (see CPU), a device pointer on the GPU (package cuda).
//
// Layouts are row-major; images are (N, C, H, W). Every output buffer is
// overwritten (never accumulated into) unless the doc says otherwise, inputs
// are never modified, and outputs never alias inputs unless stated. Optional
// inputs/outputs (a bias, an unneeded gradient) are the zero value of B
// (nil on the CPU). Methods record the first failure and report it from Sync,
// like a CUDA sticky error; the CPU implementation never fails.
type Ops[B any] interface {
	// Name says which device and library run the ops, e.g. "cpu (openblas)".
	Name() string

	// Alloc returns a zeroed buffer of n float32 values.
	Alloc(n int) B
	// Free releases a buffer from Alloc (a no-op where memory is collected).
	Free(b B)
	// Slice returns the n values of b starting at off, sharing memory.
	Slice(b B, off, n int) B
	// Upload copies len(src) values from host memory into dst.
	Upload(dst B, src []float32)
	// Download copies len(dst) values from src into host memory.
	Download(dst []float32, src B)
	// Copy sets dst[i] = src[i] for i < n.
	Copy(dst, src B, n int)
	// Fill sets y[i] = v for i < n.
	Fill(y B, v float32, n int)
	// Sync waits for queued work and returns the first error since the last Sync.
	Sync() error

	// Conv2D: y[n,k,oh,ow] = b[k] + sum_{c,r,s} w[k,c,r,s] *
	// x[n,c,oh*StrideH-PadTop+r, ow*StrideW-PadLeft+s] (zero outside x).
	// x (N,C,H,W), w (K,C,R,S), b (K) or zero, y (N,K,OutH,OutW).
	Conv2D(y, x, w, b B, d ConvDims)
	// Conv2DBackwardData: dx = dL/dx of Conv2D given dy; dx (N,C,H,W).
	Conv2DBackwardData(dx, dy, w B, d ConvDims)
	// Conv2DBackwardFilter: dw = dL/dw (K,C,R,S) and, when db is not zero,
	// db[k] = sum_{n,oh,ow} dy[n,k,oh,ow].
	Conv2DBackwardFilter(dw, db, dy, x B, d ConvDims)

	// Linear: y[m,o] = b[o] + sum_i x[m,i] * w[o,i]; x (M,In), w (Out,In)
	// (PyTorch's nn.Linear layout), b (Out) or zero, y (M,Out).
	Linear(y, x, w, b B, m, in, out int)
	// LinearBackward: dx = dy w (M,In), dw = dy^T x (Out,In), db = sum_m dy
	// (Out); any of dx, dw, db may be zero to skip it.
	LinearBackward(dx, dw, db, dy, x, w B, m, in, out int)

	// GroupNorm: for each n and group g of C/Groups channels, with mean mu
	// and variance var over the group's (C/Groups)*HW values,
	// z = (x - mu) / sqrt(var + Eps) * gamma[c] + beta[c], and y = z, or
	// y = z * sigmoid(z) when d.SiLU. mean and rstd (N*Groups) receive mu
	// and 1/sqrt(var + Eps) for the backward pass.
	GroupNorm(y, mean, rstd, x, gamma, beta B, d GroupNormDims)
	// GroupNormBackward: dx, dgamma, dbeta of GroupNorm (SiLU included
	// when d.SiLU) given dy and the saved mean and rstd.
	GroupNormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta B, d GroupNormDims)

	// SiLU: y = x * sigmoid(x), n values.
	SiLU(y, x B, n int)
	// SiLUBackward: dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x).
	SiLUBackward(dx, dy, x B, n int)

	// Add: y = a + b, n values (y may alias a or b).
	Add(y, a, b B, n int)
	// Axpby: y = alpha*x + beta*y, n values.
	Axpby(y B, alpha float32, x B, beta float32, n int)
	// Mul: y = a * b elementwise, n values (y may alias a or b).
	Mul(y, a, b B, n int)
	// Clamp: y = min(max(x, lo), hi), n values (y may alias x).
	Clamp(y, x B, lo, hi float32, n int)
	// SumSquares returns sum_i x[i]^2 over n values (for gradient-norm clipping).
	SumSquares(x B, n int) float32

	// AddChannelBias: y[n,c,p] = x[n,c,p] + bias[n,c] for p < hw;
	// bias (N,C) (a per-example bias such as the time embedding projection).
	AddChannelBias(y, x, bias B, n, c, hw int)
	// ChannelSum: dbias[n,c] = sum_p dy[n,c,p], the backward of AddChannelBias.
	ChannelSum(dbias, dy B, n, c, hw int)

	// Upsample2x: nearest-neighbour, y[n,c,2i+a,2j+b] = x[n,c,i,j];
	// x (N,C,H,W), y (N,C,2H,2W).
	Upsample2x(y, x B, n, c, h, w int)
	// Upsample2xBackward: dx[n,c,i,j] = sum_{a,b in {0,1}} dy[n,c,2i+a,2j+b].
	Upsample2xBackward(dx, dy B, n, c, h, w int)

	// ConcatChannels: y (N,Ca+Cb,HW) = [a (N,Ca,HW), b (N,Cb,HW)] along channels.
	ConcatChannels(y, a, b B, n, ca, cb, hw int)
	// SplitChannels is the backward of ConcatChannels: da, db from dy
	// (either may be zero to skip it).
	SplitChannels(da, db, dy B, n, ca, cb, hw int)

	// Transpose12: y[n,j,i] = x[n,i,j]; x (N,I,J), y (N,J,I). Moves
	// (N,C,HW) to token-major (N,HW,C) and back.
	Transpose12(y, x B, n, i, j int)

	// Attention: scaled dot-product self-attention per batch item and head:
	// o = softmax(q k^T * Scale) v with softmax over keys, in float32.
	// q, k, v, o are (B, T, Heads*HeadDim), head h using columns
	// h*HeadDim..(h+1)*HeadDim-1 (the layout of a Linear projection's output).
	Attention(o, q, k, v B, d AttnDims)
	// AttentionBackward: dq, dk, dv of Attention given do (recomputes the
	// attention probabilities from q and k).
	AttentionBackward(dq, dk, dv, do, q, k, v B, d AttnDims)

	// Embedding: y[i,:] = table[ids[i],:] for i < len(ids); table (V,Dim).
	Embedding(y, table B, ids []int, dim int)
	// EmbeddingBackward: dtable = 0, then dtable[ids[i],:] += dy[i,:]; dtable (V,Dim).
	EmbeddingBackward(dtable, dy B, ids []int, vocab, dim int)

	// AdamW: one decoupled-weight-decay Adam step (Loshchilov & Hutter 2019)
	// on n parameters, in place on p, m and v:
	// m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
	// p -= lr * (m/(1-b1^step) / (sqrt(v/(1-b2^step)) + eps) + wd*p). step >= 1.
	AdamW(p, m, v, g B, h AdamWParams, step int, n int)
	// EMA: ema = decay*ema + (1-decay)*p, n values.
	EMA(ema, p B, decay float32, n int)
	// Norm: dst[0] = sqrt(sum_i x[i]^2) over n values.
	Norm(dst, x B, n int)
	// ClipToNorm: x *= maxNorm/norm[0] when norm[0] > maxNorm (norm from Norm).
	ClipToNorm(x, norm B, maxNorm float32, n int)

	// Dropout: y[i] = x[i]/(1-p) where DropoutKeep(seed, offset+i, p), else
	// 0, for i < n; the backward pass is the same call on dy (y may alias x).
	Dropout(y, x B, p float32, seed uint64, offset, n int)
	// DiffusionLoss: the per-example training loss terms (N, 3) = (loss,
	// mse, vb), the weighted batch loss[0] and dout = dloss/dout of a
	// diffusion model's output, from x0, noise and the per-example
	// coefficient rows coef (N, NumLossCoef); see CPU.DiffusionLoss.
	DiffusionLoss(loss, terms, dout, out, x0, noise, coef B, d DiffusionLossDims)

	// GroupNormScaleShift: GroupNorm, then guided-diffusion's scale-shift
	// conditioning z' = z*(1 + ss[n,c]) + ss[n,C+c] with ss (N, 2C), then
	// SiLU when d.SiLU; mean and rstd (N*Groups) as in GroupNorm.
	GroupNormScaleShift(y, mean, rstd, x, gamma, beta, ss B, d GroupNormDims)
	// GroupNormScaleShiftBackward: dx, dgamma, dbeta and dss (N, 2C) of
	// GroupNormScaleShift given dy and the saved mean and rstd (dgamma,
	// dbeta, dss may be zero to skip them).
	GroupNormScaleShiftBackward(dx, dgamma, dbeta, dss, dy, x, mean, rstd, gamma, beta, ss B, d GroupNormDims)
	// AvgPool2x: 2x2 average pooling, stride 2: y (N,C,H,W) from
	// x (N,C,2H,2W); h and w are y's.
	AvgPool2x(y, x B, n, c, h, w int)
	// AvgPool2xBackward: dx[n,c,2i+a,2j+b] = dy[n,c,i,j]/4; dx (N,C,2H,2W).
	AvgPool2xBackward(dx, dy B, n, c, h, w int)
	// QKVAttention: softmax(Scale q^T k) attention per item and head on a
	// fused channel-major qkv (B, 3*Heads*HeadDim, T) in either head order
	// (see QKVAttnDims); o (B, Heads*HeadDim, T).
	QKVAttention(o, qkv B, d QKVAttnDims)
	// QKVAttentionBackward: dqkv (laid out as qkv) of QKVAttention given do.
	QKVAttentionBackward(dqkv, do, qkv B, d QKVAttnDims)
	// AttnPoolTokens: y (N,C,HW+1) = [mean_p x, x] + pos, pos (C, HW+1):
	// the tokens of the classifier's attention pooling.
	AttnPoolTokens(y, x, pos B, n, c, hw int)
	// AttnPoolTokensBackward: dx (N,C,HW) and dpos (C,HW+1) (may be zero)
	// of AttnPoolTokens given dy.
	AttnPoolTokensBackward(dx, dpos, dy B, n, c, hw int)
	// ChannelMean: y[n,c] = mean_p x[n,c,p] over hw positions.
	ChannelMean(y, x B, n, c, hw int)
	// ChannelMeanBackward: dx[n,c,p] = dy[n,c]/hw.
	ChannelMeanBackward(dx, dy B, n, c, hw int)
	// ReLU: y = max(x, 0), n values.
	ReLU(y, x B, n int)
	// ReLUBackward: dx = dy where x > 0, else 0.
	ReLUBackward(dx, dy, x B, n int)
	// GELU: the exact GELU y = x Phi(x) = x (1 + erf(x/sqrt 2)) / 2, n
	// values (PyTorch's nn.GELU, GLIDE's text transformer).
	GELU(y, x B, n int)
	// GELUBackward: dx = dy (Phi(x) + x phi(x)), phi the standard normal
	// density.
	GELUBackward(dx, dy, x B, n int)
}

// AdamWParams are AdamW's hyper-parameters.
type AdamWParams struct {
	LR, Beta1, Beta2, Eps, WeightDecay float32
}
