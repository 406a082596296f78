package weights

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// DiffusersVersion is the diffusers version written into exported
// configs: the version whose UNet2DModel and schedulers this project
// follows.
const DiffusersVersion = "0.21.4"

// ConfigClassNames is the key under which WriteDiffusersPipeline keeps a
// class-conditional model's class names in unet/config.json (diffusers
// ignores keys it does not know).
const ConfigClassNames = "ddpm_class_names"

// WriteDiffusersPipeline writes m as a diffusers pipeline folder that
// diffusers.DDPMPipeline.from_pretrained(dir) loads:
//
//	dir/model_index.json                          {"_class_name": "DDPMPipeline", "unet": [...], "scheduler": [...]}
//	dir/unet/config.json                          m.UNetConfig (+ _class_name, _diffusers_version, ddpm_class_names)
//	dir/unet/diffusion_pytorch_model.safetensors  m.Tensors under their diffusers names (F32)
//	dir/scheduler/scheduler_config.json           scheduler (a diffusers scheduler config, with _class_name)
//
// Each file is written atomically; dir is created when missing. A dir
// holding anything else than a previous export is refused, so a typo
// cannot scatter files into an unrelated folder.
func WriteDiffusersPipeline(dir string, m *Model, scheduler json.RawMessage) error {
	unetCfg, err := withKeys(m.UNetConfig, map[string]any{"_class_name": "UNet2DModel", "_diffusers_version": DiffusersVersion})
	if err != nil {
		return fmt.Errorf("export diffusers: unet config: %w", err)
	}
	if len(m.ClassNames) > 0 {
		if unetCfg, err = withKeys(unetCfg, map[string]any{ConfigClassNames: m.ClassNames}); err != nil {
			return fmt.Errorf("export diffusers: unet config: %w", err)
		}
	}
	var sched map[string]json.RawMessage
	if err := json.Unmarshal(scheduler, &sched); err != nil || sched["_class_name"] == nil {
		return fmt.Errorf("export diffusers: scheduler config must be a JSON object with _class_name (err %v)", err)
	}
	var schedClass string
	if err := json.Unmarshal(sched["_class_name"], &schedClass); err != nil {
		return fmt.Errorf("export diffusers: scheduler _class_name: %w", err)
	}
	if scheduler, err = withKeys(scheduler, map[string]any{"_diffusers_version": DiffusersVersion}); err != nil {
		return fmt.Errorf("export diffusers: scheduler config: %w", err)
	}
	index, _ := json.MarshalIndent(map[string]any{
		"_class_name": "DDPMPipeline", "_diffusers_version": DiffusersVersion,
		"unet": []string{"diffusers", "UNet2DModel"}, "scheduler": []string{"diffusers", schedClass},
	}, "", "  ")
	if err := checkExportDir(dir); err != nil {
		return err
	}
	for _, sub := range []string{pipelineUNetDir, pipelineSchedulerDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return fmt.Errorf("export diffusers: %w", err)
		}
	}
	if err := WriteFileAtomic(filepath.Join(dir, pipelineUNetDir, DiffusersWeights), &File{
		Metadata: map[string]string{"format": "pt"}, Tensors: m.Tensors}); err != nil {
		return fmt.Errorf("export diffusers: %w", err)
	}
	for _, f := range []struct {
		path string
		b    []byte
	}{
		{filepath.Join(dir, pipelineUNetDir, DiffusersConfig), unetCfg},
		{filepath.Join(dir, pipelineSchedulerDir, DiffusersScheduler), scheduler},
		{filepath.Join(dir, "model_index.json"), index},
	} {
		if err := writeBytesAtomic(f.path, append(f.b, '\n')); err != nil {
			return fmt.Errorf("export diffusers: %w", err)
		}
	}
	return nil
}

// checkExportDir accepts a missing or empty folder, or one that holds a
// diffusers pipeline (a previous export, overwritten file by file).
func checkExportDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("export diffusers: %w", err)
	}
	if len(ents) == 0 || isFile(filepath.Join(dir, "model_index.json")) {
		return nil
	}
	return fmt.Errorf("export diffusers: %s exists and is not a diffusers pipeline (no model_index.json): choose a new or empty folder", dir)
}

// withKeys returns the JSON object b with the given keys set.
func withKeys(b json.RawMessage, keys map[string]any) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, err
	}
	for k, v := range keys {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		obj[k] = raw
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(obj); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// writeBytesAtomic writes b to path through a synced temporary file in
// the same folder and a rename, as WriteFileAtomic does for tensors.
func writeBytesAtomic(path string, b []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
