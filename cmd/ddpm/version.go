package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/kernels"
)

// versionInfo is what `ddpm version` reports.
type versionInfo struct {
	Module    string `json:"module"`
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	BuildTime string `json:"build_time,omitempty"`
	Go        string `json:"go"`
	Platform  string `json:"platform"`
	CPU       string `json:"cpu"`    // the CPU backend: BLAS, convolution library, threads
	Device    string `json:"device"` // what --device auto picks, and why
}

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "version [--json]", "  ddpm version\n  ddpm version --json", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	v := versionInfo{Module: "github.com/ddpm-go/ddpm", Version: "(devel)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Module, v.Version = bi.Main.Path, bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			case "vcs.time":
				v.BuildTime = s.Value
			}
		}
	}
	if cpu, err := kernels.NewCPU(kernels.CPUOptions{}); err != nil {
		v.CPU = "unavailable: " + err.Error()
	} else {
		v.CPU = cpu.Name()
	}
	v.Device = "cpu"
	if b, err := cuda.Select("auto", cuda.SelectOptions{}); err != nil {
		v.Device = "error: " + err.Error()
	} else {
		v.Device = b.Name()
		if b.Reason != "" {
			v.Device += " (" + b.Reason + ")"
		}
		if b.GPU != nil {
			b.GPU.Close()
		}
	}
	if *asJSON {
		b, _ := json.Marshal(v)
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	commit := v.Commit
	if commit == "" {
		commit = "unknown"
	} else if v.Modified {
		commit += " (modified)"
	}
	fmt.Fprintf(stdout, "ddpm %s\nmodule   %s\ncommit   %s\ngo       %s %s\ncpu      %s\ndevice   %s\n", v.Version, v.Module, commit, v.Go, v.Platform, v.CPU, v.Device)
	return nil
}
