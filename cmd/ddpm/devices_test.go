package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestDevicesCPU(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"devices", "--device", "cpu", "--check"}, &out, &errb); err != nil {
		t.Fatalf("ddpm devices --device cpu --check: %v\n%s", err, errb.String())
	}
	for _, want := range []string{"device: cpu", "check: SiLU on cpu"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestDevicesAuto(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"devices"}, &out, &errb); err != nil {
		t.Fatalf("ddpm devices: %v", err)
	}
	if !strings.Contains(out.String(), "device: ") {
		t.Errorf("output lacks the device line:\n%s", out.String())
	}
}

func TestDevicesBadFlag(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"devices", "--device", "tpu"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "allowed are auto, cpu, cuda, cuda:N") {
		t.Fatalf("ddpm devices --device tpu: error %v, want one listing the allowed values", err)
	}
}
