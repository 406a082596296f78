package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
)

// TestMPIJobManifest checks deploy/mpijob/train.yaml, which no cluster
// runs here: an MPIJob (kubeflow.org/v2beta1) whose launcher starts as
// many ranks as the workers have slots, whose ddpm train flags all exist
// and parse (the run stops only at the dataset, which is the cluster's),
// with --resume, and whose --out lies on the ReadWriteMany volume that
// every worker mounts.
func TestMPIJobManifest(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/mpijob/train.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var job, pvc map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("train.yaml: %v", err)
		}
		switch doc["kind"] {
		case "MPIJob":
			job = doc
		case "PersistentVolumeClaim":
			pvc = doc
		}
	}
	if job == nil || pvc == nil {
		t.Fatal("train.yaml needs an MPIJob and the checkpoints' PersistentVolumeClaim")
	}
	get := func(v any, path ...any) any {
		for _, p := range path {
			switch k := p.(type) {
			case string:
				m, _ := v.(map[any]any)
				v = m[k]
			case int:
				l, _ := v.([]any)
				if k >= len(l) {
					return nil
				}
				v = l[k]
			}
		}
		return v
	}
	if job["apiVersion"] != "kubeflow.org/v2beta1" || get(job["spec"], "mpiImplementation") != "OpenMPI" {
		t.Fatalf("want an Open MPI job of kubeflow.org/v2beta1, have %v, %v", job["apiVersion"], get(job["spec"], "mpiImplementation"))
	}
	if m := get(pvc["spec"], "accessModes", 0); m != "ReadWriteMany" {
		t.Errorf("checkpoint volume access mode %v: every worker mounts it, so ReadWriteMany", m)
	}
	spec := job["spec"]
	slots, _ := get(spec, "slotsPerWorker").(int)
	workers, _ := get(spec, "mpiReplicaSpecs", "Worker", "replicas").(int)
	launcher := get(spec, "mpiReplicaSpecs", "Launcher", "template", "spec", "containers", 0)
	if c := get(launcher, "command", 0); c != "mpirun" {
		t.Fatalf("launcher command %v, want mpirun", c)
	}
	var args []string
	for _, a := range get(launcher, "args").([]any) {
		args = append(args, a.(string))
	}
	np := -1
	for i, a := range args {
		if a == "-np" && i+1 < len(args) {
			np, _ = strconv.Atoi(args[i+1])
		}
	}
	if np != slots*workers {
		t.Errorf("mpirun -np %d, but %d workers x %d slots", np, workers, slots)
	}
	k := strings.Index(strings.Join(args, " "), "ddpm train ")
	if k < 0 {
		t.Fatalf("launcher args %q do not run ddpm train", args)
	}
	train := strings.Fields(strings.Join(args, " ")[k+len("ddpm train "):])
	out := ""
	resume := false
	for i, a := range train {
		switch a {
		case "--out":
			out = train[i+1]
		case "--resume":
			resume = true
		}
	}
	if !resume {
		t.Error("ddpm train without --resume: a restarted job would refuse the checkpoint it left")
	}
	mounted := false
	for _, m := range get(spec, "mpiReplicaSpecs", "Worker", "template", "spec", "containers", 0, "volumeMounts").([]any) {
		mp, _ := get(m, "mountPath").(string)
		if get(m, "name") == "checkpoints" && strings.HasPrefix(out, mp+"/") {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("--out %q is not on the workers' checkpoints volume", out)
	}
	// The flags parse: the run gets as far as opening the dataset.
	var stderr bytes.Buffer
	err = runTrain(context.Background(), train, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "/data/train") {
		t.Errorf("ddpm train %s: error %v, want the dataset's (the flags must parse)\n%s", strings.Join(train, " "), err, stderr.String())
	}
}
