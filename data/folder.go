package data

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ddpm-go/ddpm/img"
)

// maxFolderBytes bounds the memory a folder dataset may take (4 GiB of
// 8-bit pixels at the model size).
const maxFolderBytes = 4 << 30

// LoadFolder loads every .png, .jpg and .jpeg file (any case) under dir,
// recursively, in lexical path order, resized and center-cropped to
// opts.Size × opts.Size (img.Fit) with opts.Channels channels (1 gray, 3 RGB;
// 0 means 3). With opts.Labels, the first-level subfolder of each file is its
// class (classes sorted by name) and files directly in dir are an error.
// opts.Split, Dir and Resize are ignored. An unreadable image is an error
// naming the file; a folder with no images is an error. Images are decoded
// once and kept in memory at the model size.
func LoadFolder(ctx context.Context, dir string, opts Options) (*Images, error) {
	c := opts.Channels
	if c == 0 {
		c = 3
	}
	if c != 1 && c != 3 {
		return nil, fmt.Errorf("data: folder %s: channels=%d: allowed 1 or 3", dir, opts.Channels)
	}
	s := opts.Size
	if s < 1 || s > 4096 {
		return nil, fmt.Errorf("data: folder %s: size=%d: allowed 1..4096", dir, opts.Size)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("data: folder: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("data: folder %s is not a directory", dir)
	}
	var files []string
	err = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() || !e.Type().IsRegular() && e.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".png", ".jpg", ".jpeg":
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("data: folder %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("data: folder %s has no .png, .jpg or .jpeg files", dir)
	}
	per := c * s * s
	if int64(len(files))*int64(per) > maxFolderBytes {
		return nil, fmt.Errorf("data: folder %s: %d images of %dx%dx%d need more than %d bytes; use a smaller size or fewer images", dir, len(files), c, s, s, maxFolderBytes)
	}
	var labels []uint8
	var names []string
	if opts.Labels {
		classOf := make([]string, len(files))
		seen := map[string]bool{}
		for i, f := range files {
			rel, _ := filepath.Rel(dir, f)
			parts := strings.Split(filepath.ToSlash(rel), "/")
			if len(parts) < 2 {
				return nil, fmt.Errorf("data: folder %s: %s is not in a class subfolder (labels need DIR/<class>/image)", dir, f)
			}
			classOf[i] = parts[0]
			if !seen[parts[0]] {
				seen[parts[0]] = true
				names = append(names, parts[0])
			}
		}
		sort.Strings(names)
		if len(names) > 256 {
			return nil, fmt.Errorf("data: folder %s has %d class subfolders: allowed at most 256", dir, len(names))
		}
		idx := map[string]uint8{}
		for k, n := range names {
			idx[n] = uint8(k)
		}
		labels = make([]uint8, len(files))
		for i, cl := range classOf {
			labels[i] = idx[cl]
		}
	}
	pix := make([]uint8, len(files)*per)
	for i, f := range files {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("data: folder %s: %w", dir, err)
			}
		}
		if err := loadOne(f, pix[i*per:(i+1)*per], c, s); err != nil {
			return nil, err
		}
	}
	d, err := NewImages(pix, len(files), c, s, s, labels, len(names), names, 0, ResizeNone)
	if err != nil {
		return nil, fmt.Errorf("data: folder %s: %w", dir, err)
	}
	return d, nil
}

// loadOne decodes the image at path into dst as (c, s, s) bytes.
func loadOne(path string, dst []uint8, c, s int) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	im, err := img.DecodeImage(f)
	if err != nil {
		return fmt.Errorf("data: image %s: %w", path, err)
	}
	u, err := img.Fit(im, c, s, s)
	if err != nil {
		return fmt.Errorf("data: image %s: %w", path, err)
	}
	copy(dst, u)
	return nil
}
