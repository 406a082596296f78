package weights

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFileAtomic writes f as a safetensors file at path so that a crash at
// any moment leaves either the previous file or the complete new one: it
// writes a temporary file in the same directory, syncs it to disk, closes it,
// renames it over path and syncs the directory. On error the temporary file
// is removed and the previous file is untouched. A process killed midway may
// leave a ".<name>.tmp*" file behind, never a partial path.
func WriteFileAtomic(path string, f *File) error {
	return writeFileAtomic(path, f, nil)
}

// writeFileAtomic is WriteFileAtomic with a hook wrapping the temporary
// file's writer, for tests that interrupt the write.
func writeFileAtomic(path string, f *File, wrap func(io.Writer) io.Writer) (err error) {
	if _, _, err := encodeHeader(f); err != nil { // validate before touching the disk
		return fmt.Errorf("write %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var w io.Writer = tmp
	if wrap != nil {
		w = wrap(w)
	}
	if err := Write(w, f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		// Persist the rename; some filesystems refuse to sync directories,
		// which costs durability of the rename only, never consistency.
		_ = d.Sync()
		d.Close()
	}
	return nil
}
