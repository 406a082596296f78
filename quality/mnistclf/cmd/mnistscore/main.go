// Command mnistscore reports how often generated digits are read as the class
// they were meant to show, using the pretrained mnistclf classifier.
//
// Usage:
//
//	mnistscore [-weights clf.bin] [-json] K=DIR [K=DIR ...]
//	mnistscore [-weights clf.bin] [-json] ROOT
//
// Each DIR holds 28×28 or 32×32 PNGs meant to show digit K (for example from
// `ddpm sample --class K --n 100 --out-dir DIR`); ROOT holds subfolders named
// 0..9. It prints per-class and overall accuracy.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ddpm-go/ddpm/quality/mnistclf"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "mnistscore:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mnistscore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	weights := fs.String("weights", "", "classifier weights file (default: the embedded pretrained clf.bin)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mnistscore [-weights FILE] [-json] K=DIR [K=DIR ...] | ROOT")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no directories given")
	}
	var c *mnistclf.Classifier
	var err error
	if *weights != "" {
		c, err = mnistclf.LoadFile(*weights)
	} else {
		c, err = mnistclf.Pretrained()
	}
	if err != nil {
		return err
	}
	type job struct {
		class int
		dir   string
	}
	var jobs []job
	if fs.NArg() == 1 && !strings.Contains(fs.Arg(0), "=") {
		root := fs.Arg(0)
		for k := range mnistclf.NumClasses {
			d := filepath.Join(root, strconv.Itoa(k))
			if st, err := os.Stat(d); err == nil && st.IsDir() {
				jobs = append(jobs, job{k, d})
			}
		}
		if len(jobs) == 0 {
			return fmt.Errorf("%s has no subfolders named 0..9", root)
		}
	} else {
		for _, a := range fs.Args() {
			ks, dir, ok := strings.Cut(a, "=")
			k, err := strconv.Atoi(ks)
			if !ok || err != nil || k < 0 || k >= mnistclf.NumClasses {
				return fmt.Errorf("argument %q: want K=DIR with K in 0..9", a)
			}
			jobs = append(jobs, job{k, dir})
		}
	}
	var total mnistclf.Report
	for _, j := range jobs {
		b, _, err := mnistclf.ReadPNGDir(j.dir)
		if err != nil {
			return err
		}
		intended := make([]int, b.N)
		for i := range intended {
			intended[i] = j.class
		}
		r, err := c.Score(b, intended)
		if err != nil {
			return err
		}
		total.Add(r)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(total)
	}
	_, err = fmt.Fprint(stdout, total)
	return err
}
