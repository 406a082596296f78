package unet

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// blockCase builds one block of the model from input nodes.
type blockCase struct {
	name  string
	cfg   func(*Config)
	in    []tensor.Shape
	build func(b *builder, in []*G.Node) *G.Node
}

// TestBlockGradientsFiniteDifference checks every block's gradient with
// respect to its inputs AND its parameters against central finite
// differences of its forward pass (float32 graph, float64 loss sums), with
// L = sum(out * R) handed to the graph through ExternalLoss.
func TestBlockGradientsFiniteDifference(t *testing.T) {
	cases := []blockCase{
		{name: "ResnetBlock2D/shortcut", in: []tensor.Shape{{2, 4, 4, 4}, {2, 16}},
			build: func(b *builder, in []*G.Node) *G.Node { return b.resnet("r", in[0], in[1], 8, false) }},
		{name: "ResnetBlock2D/identity", in: []tensor.Shape{{2, 8, 4, 4}, {2, 16}},
			build: func(b *builder, in []*G.Node) *G.Node { return b.resnet("r", in[0], in[1], 8, false) }},
		{name: "ResnetBlock2D/dropout", cfg: func(c *Config) { c.Dropout = 0.3 }, in: []tensor.Shape{{2, 8, 4, 4}, {2, 16}},
			build: func(b *builder, in []*G.Node) *G.Node { return b.resnet("r", in[0], in[1], 8, true) }},
		{name: "Attention/1head", in: []tensor.Shape{{2, 8, 3, 3}},
			build: func(b *builder, in []*G.Node) *G.Node { return b.attention("a", in[0], 8) }},
		{name: "Attention/2heads", cfg: func(c *Config) { d := 4; c.AttentionHeadDim = &d }, in: []tensor.Shape{{2, 8, 3, 3}},
			build: func(b *builder, in []*G.Node) *G.Node { return b.attention("a", in[0], 8) }},
		{name: "Downsample2D/pad0", in: []tensor.Shape{{2, 4, 6, 6}},
			build: func(b *builder, in []*G.Node) *G.Node { return b.downsample("d", in[0]) }},
		{name: "Downsample2D/pad1", cfg: func(c *Config) { c.DownsamplePadding = 1 }, in: []tensor.Shape{{2, 4, 6, 6}},
			build: func(b *builder, in []*G.Node) *G.Node { return b.downsample("d", in[0]) }},
		{name: "Upsample2D", in: []tensor.Shape{{2, 4, 3, 3}},
			build: func(b *builder, in []*G.Node) *G.Node { return b.upsample("u", in[0]) }},
		{name: "Concat+GroupNormSiLU", in: []tensor.Shape{{2, 4, 3, 3}, {2, 8, 3, 3}},
			build: func(b *builder, in []*G.Node) *G.Node { return b.norm("n", b.concat(in[0], in[1]), true) }},
		{name: "TimestepEmbedding+class", in: []tensor.Shape{{3, 8}, {3, 4}},
			build: func(b *builder, in []*G.Node) *G.Node {
				e := b.linear("time_embedding.linear_1", in[0], 16)
				e = b.linear("time_embedding.linear_2", b.silu(e), 16)
				table := b.param("class_embedding.weight", tensor.Shape{4, 16}, 0, 'n')
				ce := b.op(newEmbed(b.m.cpu, 3, 4, 16), in[1], table)
				return b.silu(b.add(e, ce))
			}},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkBlock(t, tc, uint64(ci)) })
	}
}

func checkBlock(t *testing.T, tc blockCase, seed uint64) {
	cfg := tinyConfig()
	if tc.cfg != nil {
		tc.cfg(&cfg)
	}
	cpu := newCPU(t)
	r := rand.New(rand.NewPCG(seed, 9))
	m := &Model{cfg: cfg, cpu: cpu, byName: map[string]*param{}, graphs: map[graphKey]*graph{}, init: rand.New(rand.NewPCG(seed, 1))}
	gr := &graph{g: G.NewGraph(), nodeOf: map[string]*G.Node{}}
	b := &builder{m: m, gr: gr}
	var ins []*G.Node
	var inData [][]float32
	for i, s := range tc.in {
		v := tensor.New(tensor.WithShape(s.Clone()...), tensor.Of(tensor.Float32))
		d := v.Data().([]float32)
		for j := range d {
			d[j] = float32(r.NormFloat64())
		}
		if tc.name == "TimestepEmbedding+class" && i == 1 { // one-hot labels are not differentiated
			clear(d)
			for n := 0; n < s[0]; n++ {
				d[n*s[1]+r.IntN(s[1])] = 1
			}
		}
		ins = append(ins, G.NewTensor(gr.g, tensor.Float32, len(s), G.WithShape(s.Clone()...), G.WithName("in"+string(rune('0'+i))), G.WithValue(v)))
		inData = append(inData, d)
	}
	out := tc.build(b, ins)
	if b.err != nil {
		t.Fatal(b.err)
	}
	for _, mask := range gr.dropMasks {
		for i := range *mask {
			if r.Float64() < cfg.Dropout {
				(*mask)[i] = 0
			} else {
				(*mask)[i] = float32(1 / (1 - cfg.Dropout))
			}
		}
	}
	R := make([]float32, out.Shape().TotalSize())
	for i := range R {
		R[i] = float32(r.NormFloat64())
	}
	var lossVal float64
	fn := func(o, dout []float32) (float64, error) {
		var s float64
		for i, v := range o {
			s += float64(v) * float64(R[i])
		}
		copy(dout, R)
		lossVal = s
		return s, nil
	}
	loss := &ExternalLoss{opBase: newBase("ExternalLoss", nil, 1, cpu), Fn: &fn}
	lossNode, err := apply(loss, out)
	if err != nil {
		t.Fatal(err)
	}
	// Differentiate w.r.t. the real-valued inputs and every parameter.
	type wrt struct {
		name string
		data []float32
	}
	var targets []wrt
	var nodes []*G.Node
	for i, n := range ins {
		if tc.name == "TimestepEmbedding+class" && i == 1 {
			continue
		}
		targets = append(targets, wrt{n.Name(), inData[i]})
		nodes = append(nodes, n)
	}
	for _, p := range m.params {
		targets = append(targets, wrt{p.name, p.t.Data().([]float32)})
		nodes = append(nodes, gr.nodeOf[p.name])
	}
	grads, err := G.Grad(lossNode, nodes...)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(gr.g)
	defer vm.Close()
	eval := func() float64 {
		vm.Reset()
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		return lossVal
	}
	eval()
	analytic := make([][]float32, len(grads))
	for i, g := range grads {
		analytic[i] = append([]float32(nil), floats(g.Value())...)
	}
	checked := 0
	for ti, w := range targets {
		for k := 0; k < 4; k++ {
			i := r.IntN(len(w.data))
			old := w.data[i]
			const h = 1e-2
			w.data[i] = old + h
			lp := eval()
			w.data[i] = old - h
			lm := eval()
			w.data[i] = old
			fd := (lp - lm) / (2 * h)
			g := float64(analytic[ti][i])
			if math.Abs(g-fd) > 2e-3+3e-2*math.Max(math.Abs(g), math.Abs(fd)) {
				t.Errorf("d/d %s[%d]: gradient %.6g, finite difference %.6g", w.name, i, g, fd)
			}
			checked++
		}
	}
	if len(m.params) == 0 {
		t.Fatal("block has no parameters")
	}
	t.Logf("%d inputs and %d parameter tensors, %d entries checked", len(targets)-len(m.params), len(m.params), checked)
}
