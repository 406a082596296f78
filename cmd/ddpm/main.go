// Command ddpm trains denoising diffusion models, samples images from them,
// evaluates their likelihood and serves them over HTTP.
//
// Usage:
//
//	ddpm <command> [flags]
//
// Run "ddpm help" for the list of commands and "ddpm <command> -h" for the
// flags of one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/pipeline"
)

// command is one subcommand: it parses its own flags from args and runs.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands lists the subcommands; each lives in its own file.
func commands() map[string]command {
	return map[string]command{
		"bench":            {"time the UNet's forward pass and training step", runBench},
		"convert":          {"convert an OpenAI guided-diffusion checkpoint (.pt) to a ddpm model file", runConvert},
		"devices":          {"list GPUs and show which device --device picks", runDevices},
		"inspect":          {"show what a weights file, checkpoint or diffusers folder holds", runInspect},
		"predict":          {"run the UNet once on x_t at given timesteps and write its output .npy", runPredict},
		"schedule":         {"print or plot a noise schedule", runSchedule},
		"train":            {"train a model on a dataset", runTrain},
		"train-classifier": {"train a noisy classifier for classifier guidance (ddpm sample --classifier)", runTrainClassifier},
		"sample":           {"generate images from a model", runSample},
		"eval":             {"negative log-likelihood in bits/dim on a test set", runEval},
		"export":           {"write a checkpoint or diffusers folder as one model file", runExport},
		"fid":              {"score generated digits: Frechet distance on MNIST-classifier features, accuracy by class", runFid},
		"serve":            {"serve a model over HTTP (OpenAI Images API, jobs, metrics, web page)", runServe},
		"version":          {"print the version, commit, Go version, CPU libraries and GPU found", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ddpm:", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for usage errors and 1 for everything else.
func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0 // -h asked for the help text, which is printed
	}
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// usageError marks a bad command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout, cmds)
		return nil
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(stderr, cmds)
		return usageError{fmt.Sprintf("unknown command %q", args[0])}
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: ddpm <command> [flags]\n\ncommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun \"ddpm <command> -h\" for a command's flags and examples.")
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints usage with examples to stderr.
func newFlagSet(name, synopsis, examples string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ddpm %s\n\n", synopsis)
		fs.PrintDefaults()
		if examples != "" {
			fmt.Fprintf(stderr, "\nexamples:\n%s\n", examples)
		}
	}
	return fs
}

// parseFlags parses args and turns flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

// parseArgs parses flags given before, between or after positional
// arguments and returns the positional ones in order.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// openPipeline opens --model on --device for the generating commands,
// logging the device line (and Hub downloads) to log; a bad --device is a
// usage error.
func openPipeline(ctx context.Context, model, device string, log io.Writer) (*pipeline.Pipeline, error) {
	if _, err := cuda.ParseDevice(device); err != nil {
		return nil, usageError{err.Error()}
	}
	return pipeline.Open(ctx, model, pipeline.Options{Device: device,
		Logf: func(f string, a ...any) { fmt.Fprintf(log, f+"\n", a...) }})
}
