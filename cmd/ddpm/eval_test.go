package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestEvalErrors(t *testing.T) {
	model := tinyModelFile(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--limit", "-1"}, "--limit"},
		{[]string{"--batch", "0"}, "--batch"},
		{[]string{"--dataset", "mnist"}, "the model takes 1x8x8"},
		{[]string{"--dataset", "nope:x"}, "nope"},
	} {
		var so, se bytes.Buffer
		err := run(context.Background(), append([]string{"eval", "--model", model}, tc.args...), &so, &se)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestMeanSE(t *testing.T) {
	m, se := meanSE([]float64{1, 2, 3, 4})
	if m != 2.5 || se < 0.6454 || se > 0.6455 {
		t.Errorf("meanSE = %v, %v; want 2.5, 0.6455", m, se)
	}
}
